"""The interface between the API and whatever trains runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Executor(Protocol):
    """Takes batches of queued runs (named by their ``batch_key``) and gets them trained.

    The database is the source of truth: an executor only learns *that* work is waiting; it claims
    the runs with a conditional update, so a batch announced twice still trains once.
    """

    name: str

    def start(self) -> None:
        """Begin taking work (and recover runs a dead process left behind)."""
        ...

    def enqueue(self, batch_keys: Sequence[str]) -> None:
        """Announce batches whose runs were just queued (after their transaction committed)."""
        ...

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking work; running batches are interrupted and their runs re-queued."""
        ...

    def check(self) -> None:
        """Raise unless the executor can take work (its threads, or its broker, are alive)."""
        ...
