"""Ids on the lines Celery itself writes about a task, as fields the JSON logs can be searched by.

Lines written while a task runs get their ids from the task's log context (:mod:`worker.tasks`).
Celery's worker process also logs a message's arrival ("Task … received") before any task runs;
it passes the task's id and arguments along with the line (``extra={"data": …}``), and
:class:`CeleryTaskIds` turns them into ``task_id``, ``batch_key`` and ``experiment_id``.
"""

from __future__ import annotations

import ast
import logging
from typing import Any

from worker.batches import experiment_of


class CeleryTaskIds(logging.Filter):
    """Adds the task's ids to a record that carries Celery's task data and no ids of its own.

    >>> record = logging.LogRecord("celery", logging.INFO, "", 1, "received", (), None)
    >>> record.data = {"id": "t-1", "args": "['exp_1/0']"}
    >>> CeleryTaskIds().filter(record), record.task_id, record.experiment_id
    (True, 't-1', 'exp_1')
    """

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            return True
        if getattr(record, "task_id", None) is None:
            record.task_id = data["id"]
        batch_key = _batch_key(data.get("args"))
        if batch_key is not None and getattr(record, "batch_key", None) is None:
            record.batch_key = batch_key
            record.experiment_id = experiment_of(batch_key)
        return True


def _batch_key(args: Any) -> str | None:
    """The batch key in a task's arguments, given as Celery's repr of them (``"['exp_1/0']"``)."""
    try:
        value = ast.literal_eval(args) if isinstance(args, str) else args
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, list | tuple) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    return None
