"""Telling infrastructure failures from the others, and riding them out with capped backoff.

An infrastructure error (the database, the artifact store or the network unreachable) says nothing
about the run: trying again later may succeed, so an executor backs off instead of failing the run.
Anything else (a bug, a bad spec) fails the run at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from gni_service.storage import StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 15.0


def is_infrastructure_error(error: BaseException) -> bool:
    """True for errors that say "unreachable", not "wrong".

    >>> is_infrastructure_error(ConnectionError()), is_infrastructure_error(ValueError())
    (True, False)
    """
    if isinstance(error, OperationalError | StorageError | ConnectionError | TimeoutError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def backoff_s(attempt: int, *, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, base · 2^attempt)].

    >>> 0.0 <= backoff_s(2) <= 2.0
    True
    """
    return (rng or random).uniform(0.0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0**attempt))


def retry_infrastructure(
    action: Callable[[], T],
    *,
    budget_s: float,
    what: str,
    stopping: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``action()``, tried again with backoff while it fails with an infrastructure error.

    Gives up (re-raising the last error) once ``budget_s`` has passed or ``stopping`` is set; any
    other error propagates at once.
    """
    deadline = clock() + budget_s
    attempt = 0
    while True:
        try:
            return action()
        except Exception as error:
            if not is_infrastructure_error(error):
                raise
            wait = backoff_s(attempt)
            if clock() + wait > deadline or (stopping is not None and stopping.is_set()):
                raise
            log.warning("%s failed (%s); retrying in %.1f s", what, type(error).__name__, wait)
            if stopping is not None:
                stopping.wait(wait)
            else:
                time.sleep(wait)
            attempt += 1
