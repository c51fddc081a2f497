"""Helpers shared by the test packages' fixtures."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NoReturn

import pytest


def missing_service(message: str) -> NoReturn:
    """A service the test needs is missing: fail under CI (``CI=true``), skip on a developer's machine."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class RecordingExecutor:
    """A test double of the service's executor: remembers the batches it was given and trains nothing."""

    name = "recording"

    def __init__(self) -> None:
        self.enqueued: list[str] = []
        self.running = False

    def start(self) -> None:
        self.running = True

    def enqueue(self, batch_keys: Sequence[str]) -> None:
        self.enqueued.extend(batch_keys)

    def stop(self, timeout: float | None = None) -> None:
        self.running = False

    def check(self) -> None:
        if not self.running:
            raise RuntimeError("not started")
