"""A progress bar for waiting on an experiment: tqdm in a terminal or a notebook, nothing otherwise."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from gni_client.types import Experiment


def interactive() -> bool:
    """True in a terminal (stderr is a TTY) or a Jupyter kernel."""
    if "ipykernel" in sys.modules:
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class ProgressBar:
    """Training steps done over all runs of an experiment, with the counts by status."""

    def __init__(self, *, enabled: bool) -> None:
        self._bar: Any = None
        if enabled and interactive():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=0, unit="step", file=sys.stderr, dynamic_ncols=True, leave=True)

    def update(self, experiment: Experiment) -> None:
        if self._bar is None:
            return
        progress = experiment.progress
        if progress is not None:
            self._bar.total = progress.steps_total
            self._bar.n = progress.steps_done
        counts = experiment.counts
        self._bar.set_postfix_str(
            f"{counts.succeeded}/{experiment.run_count} done, {counts.running} running, "
            f"{counts.failed} failed, {counts.cancelled} cancelled",
            refresh=False,
        )
        self._bar.refresh()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()
