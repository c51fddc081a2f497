"""Structured logs: one JSON object per line, with the request, task, experiment and runs they concern.

:func:`configure_logging` is called when a process starts (the API's lifespan, ``gni serve``,
``gni worker``), never at import time. The ids come from context variables that the request-id
middleware, the executors and :func:`log_context` set, or from a record's ``extra``; so a line
written deep inside a request or a batch carries them without being passed along. ``run_ids`` (the
runs of the batch being trained) is a list; the others are strings. Context variables do not follow
a new thread: a thread that works for a batch runs in a copy of its starter's context
(:func:`contextvars.copy_context`).

>>> import io, json
>>> record = logging.LogRecord("gni", logging.INFO, __file__, 1, "hello %s", ("world",), None)
>>> with log_context(experiment_id="exp_1", run_ids=["run_1", "run_2"]):
...     line = JsonFormatter().format(record)
>>> {k: json.loads(line)[k] for k in ("level", "message", "experiment_id", "run_ids")}
{'level': 'INFO', 'message': 'hello world', 'experiment_id': 'exp_1', 'run_ids': ['run_1', 'run_2']}
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal, TextIO

CONTEXT_FIELDS = ("request_id", "task_id", "batch_key", "experiment_id", "run_id", "run_ids")
ContextValue = str | tuple[str, ...]
_context: dict[str, ContextVar[ContextValue | None]] = {
    name: ContextVar(f"gni_{name}", default=None) for name in CONTEXT_FIELDS
}
_HANDLER_FLAG = "_gni_structured_handler"


@contextmanager
def log_context(**ids: str | Sequence[str] | None) -> Iterator[None]:
    """Within the block, every log line carries these ids (any of :data:`CONTEXT_FIELDS`)."""
    tokens = [
        (_context[name], _context[name].set(_context_value(value)))
        for name, value in ids.items()
        if name in _context
    ]
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


def bind_ids(**ids: str | Sequence[str] | None) -> None:
    """Set ids until the end of the enclosing :func:`log_context` block that named them.

    For ids learnt half-way through a block (a batch's runs, once claimed); that block's exit
    restores them. Outside such a block the ids stay set in the current context.
    """
    for name, value in ids.items():
        if name in _context:
            _context[name].set(_context_value(value))


def _context_value(value: str | Sequence[str] | None) -> ContextValue | None:
    if value is None or isinstance(value, str):
        return value
    return tuple(str(item) for item in value)


def current_ids() -> dict[str, ContextValue]:
    return {name: value for name, variable in _context.items() if (value := variable.get()) is not None}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", <context fields that are set>, exc_info?}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(current_ids())
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        for name in CONTEXT_FIELDS:
            if name in entry:
                entry[name] = _json_id(entry[name])
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _json_id(value: object) -> object:
    """A context id as JSON: a string, or a list of strings (``run_ids``)."""
    if isinstance(value, list | tuple | set | frozenset):
        return [str(item) for item in value]
    return str(value)


class _ContextFilter(logging.Filter):
    """Puts the context ids on records, for the text format's ``%(request_id)s`` and ``%(ids)s``."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current_ids()
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, ids.get(name, "-"))
        shown = (
            f"{name}={','.join(value) if isinstance(value, tuple) else value}"
            for name in CONTEXT_FIELDS[1:]
            if (value := getattr(record, name)) != "-"
        )
        record.ids = " ".join(shown) or "-"
        return True


class _StandardErrorHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it per test)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


QUIET_LIBRARIES = (
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "httpcore",
    "httpx",
    "kombu",
    "amqp",
    "redis",
)


def configure_logging(
    log_format: Literal["json", "text"] = "json",
    level: str = "INFO",
    stream: TextIO | None = None,
    *,
    id_filters: Sequence[logging.Filter] = (),
) -> logging.Handler:
    """Install one handler on the root logger (replacing the one an earlier call installed).

    ``id_filters`` put ids on records that do not get them from the context (e.g. Celery's lines
    about a message it has not started yet); they run before the ids are read.
    """
    root = logging.getLogger()
    for installed in list(root.handlers):
        if getattr(installed, _HANDLER_FLAG, False):
            root.removeHandler(installed)
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StandardErrorHandler()
    )
    setattr(handler, _HANDLER_FLAG, True)
    for id_filter in id_filters:
        handler.addFilter(id_filter)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] [%(ids)s] %(message)s")
        )
        handler.addFilter(_ContextFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # DEBUG is for this service's own lines: the HTTP and AWS libraries would log request headers
    # at DEBUG, signed Authorization headers and access key ids included.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level.upper())))
    # uvicorn's loggers keep their own handlers unless told to propagate through this one.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler
