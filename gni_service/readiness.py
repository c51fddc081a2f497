"""Readiness checks with a deadline: a dependency that hangs makes ``/readyz`` say so, not hang.

Each check (database schema, artifact store, executor) runs in a thread of its own, and at most one
attempt of a check is in flight at a time: a probe that finds one still running waits on that
attempt instead of starting another. A probe answers within ``deadline_s`` whatever the checks do;
a check with no answer by then reads ``unavailable: no answer within …``. So a hung Redis, S3 or
database ties up at most one thread per check, however often the orchestrator probes, and never the
threads that serve requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gni_engine.errors import GNIError

DEFAULT_DEADLINE_S = 3.0


@dataclass
class _Attempt:
    done: threading.Event = field(default_factory=threading.Event)
    result: str = "unavailable: no answer yet"


def _outcome(check: Callable[[], None]) -> str:
    try:
        check()
    except GNIError as error:
        return f"unavailable: {error.message}"
    except Exception as error:  # any failure means "not ready"; say which, without internals
        return f"unavailable: {type(error).__name__}"
    return "ok"


class ReadinessProbe:
    """``probe()`` → ``{check name: "ok" | "unavailable: why"}``, within ``deadline_s``."""

    def __init__(self, checks: Mapping[str, Callable[[], None]], *, deadline_s: float = DEFAULT_DEADLINE_S):
        self.checks = dict(checks)
        self.deadline_s = deadline_s
        self._lock = threading.Lock()
        self._in_flight: dict[str, _Attempt] = {}

    def _attempt(self, name: str) -> _Attempt:
        with self._lock:
            attempt = self._in_flight.get(name)
            if attempt is not None:
                return attempt  # still running since an earlier probe: wait on it, start nothing
            attempt = self._in_flight[name] = _Attempt()

        def run() -> None:
            attempt.result = _outcome(self.checks[name])
            with self._lock:
                del self._in_flight[name]
            attempt.done.set()

        threading.Thread(target=run, name=f"gni-ready-{name}", daemon=True).start()
        return attempt

    def probe(self) -> dict[str, str]:
        attempts = {name: self._attempt(name) for name in self.checks}
        end = time.monotonic() + self.deadline_s
        results = {}
        for name, attempt in attempts.items():
            if attempt.done.wait(max(0.0, end - time.monotonic())):
                results[name] = attempt.result
            else:
                results[name] = f"unavailable: no answer within {self.deadline_s:g} s"
        return results

    def threads_in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)
