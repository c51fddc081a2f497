"""Structured logs: one JSON object per line, with the request, experiment and run they concern.

:func:`configure_logging` is called when a process starts (the API's lifespan, ``gni serve``,
``gni worker``), never at import time. The ids come from context variables that the request-id
middleware and :func:`log_context` set, or from a record's ``extra``; so a line written deep
inside a request or a run carries them without being passed along.

>>> import io, json
>>> record = logging.LogRecord("gni", logging.INFO, __file__, 1, "hello %s", ("world",), None)
>>> with log_context(run_id="run_1"):
...     line = JsonFormatter().format(record)
>>> {k: json.loads(line)[k] for k in ("level", "logger", "message", "run_id")}
{'level': 'INFO', 'logger': 'gni', 'message': 'hello world', 'run_id': 'run_1'}
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal, TextIO

CONTEXT_FIELDS = ("request_id", "experiment_id", "run_id")
_context: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"gni_{name}", default=None) for name in CONTEXT_FIELDS
}
_HANDLER_FLAG = "_gni_structured_handler"


@contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Within the block, every log line carries these ids (request_id, experiment_id, run_id)."""
    tokens = [(_context[name], _context[name].set(value)) for name, value in ids.items() if name in _context]
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


def current_ids() -> dict[str, str]:
    return {name: value for name, variable in _context.items() if (value := variable.get()) is not None}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", request_id?, experiment_id?, run_id?, exc_info?}``."""

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
                entry[name] = str(value)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _ContextFilter(logging.Filter):
    """Puts the context ids on records, for the text format's ``%(request_id)s``."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current_ids()
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, ids.get(name, "-"))
        return True


class _StandardErrorHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it per test)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def configure_logging(
    log_format: Literal["json", "text"] = "json", level: str = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Install one handler on the root logger (replacing the one an earlier call installed)."""
    root = logging.getLogger()
    for installed in list(root.handlers):
        if getattr(installed, _HANDLER_FLAG, False):
            root.removeHandler(installed)
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StandardErrorHandler()
    )
    setattr(handler, _HANDLER_FLAG, True)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
        handler.addFilter(_ContextFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's loggers keep their own handlers unless told to propagate through this one.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler
