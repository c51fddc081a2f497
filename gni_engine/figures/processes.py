"""Drawing the figures of many runs at once, the runs dealt out across processes.

A run's figures take 0.5–2 s of matplotlib on one core, and matplotlib neither runs in parallel
threads nor releases the GIL while it lays out text. After a GPU has trained a 1,000-run batch in a
minute, drawing its figures one run after another would take the better part of an hour, so the runs
are dealt out round-robin into chunks of at least ``min_runs_per_process`` (a child interpreter
spends a few seconds importing torch and matplotlib before it draws anything): this process draws
the first chunk while a child (``python -m gni_engine.figures.processes JOBS RESULT``) draws each
other one. Children are plain subprocesses rather than :mod:`multiprocessing` workers because a
Celery prefork worker is a daemonic process, and daemonic processes may not have
:mod:`multiprocessing` children.

A child that fails (killed, out of memory, its interpreter broken) has its chunk drawn again here, so
the figures are those a sequential drawing gives, or the error is the error it raises.

>>> deal(7, processes=3, min_runs_per_process=2)
[[0, 3, 6], [1, 4], [2, 5]]
>>> deal(3, processes=8, min_runs_per_process=2)
[[0, 1, 2]]
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from gni_engine.data import Dataset
from gni_engine.training import RunState

log = logging.getLogger(__name__)

MIN_RUNS_PER_PROCESS = 4
STDERR_TAIL_CHARS = 2000


@dataclass(frozen=True)
class FigureJob:
    """One run's figures to draw: what it learned, its data, and the folder they go to."""

    state: RunState
    dataset: Dataset
    figures_dir: Path


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and ``taskset`` set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def deal(n_jobs: int, processes: int, min_runs_per_process: int = MIN_RUNS_PER_PROCESS) -> list[list[int]]:
    """Job indices dealt round-robin into at most ``processes`` chunks of ≥ ``min_runs_per_process``."""
    if processes < 1:
        raise ValueError(f"figure processes must be at least 1, got {processes}")
    if min_runs_per_process < 1:
        raise ValueError(f"min_runs_per_process must be at least 1, got {min_runs_per_process}")
    chunks = max(1, min(processes, n_jobs // min_runs_per_process))
    return [list(range(c, n_jobs, chunks)) for c in range(chunks)]


def draw_figures(
    jobs: Sequence[FigureJob],
    processes: int | None = None,
    *,
    min_runs_per_process: int = MIN_RUNS_PER_PROCESS,
) -> list[dict[str, Path]]:
    """Every job's figures (as :func:`~gni_engine.figures.run.run_figures` draws them), in job order.

    ``processes``: how many processes draw, this one included (``None``: one per available core).
    """
    chunks = deal(len(jobs), available_cpus() if processes is None else processes, min_runs_per_process)
    results: dict[int, dict[str, Path]] = {}
    with tempfile.TemporaryDirectory(prefix="gni-figures-") as scratch:
        children: list[_Child] = []
        try:
            for n, chunk in enumerate(chunks[1:], 1):
                children.append(_start_child([jobs[i] for i in chunk], Path(scratch), n))
            results.update(zip(chunks[0], _draw_here([jobs[i] for i in chunks[0]]), strict=True))
            for chunk, child in zip(chunks[1:], children, strict=True):
                drawn = child.finish()
                if drawn is None:
                    drawn = _draw_here([jobs[i] for i in chunk])
                results.update(zip(chunk, drawn, strict=True))
        finally:
            for child in children:
                child.stop()
    return [results[i] for i in range(len(jobs))]


def _draw_here(jobs: Sequence[FigureJob]) -> list[dict[str, Path]]:
    from gni_engine.figures.run import run_figures

    return [run_figures(job.state, job.dataset, job.figures_dir) for job in jobs]


@dataclass
class _Child:
    process: subprocess.Popen[bytes]
    result_file: Path
    stderr_file: Path
    n_jobs: int

    def finish(self) -> list[dict[str, Path]] | None:
        """The chunk's figures, or None (with a warning saying why) when the child did not draw them."""
        code = self.process.wait()
        try:
            if code == 0:
                drawn = json.loads(self.result_file.read_text())
                if isinstance(drawn, list) and len(drawn) == self.n_jobs:
                    return [{name: Path(path) for name, path in files.items()} for files in drawn]
        except (OSError, ValueError):
            pass
        log.warning(
            "a figure-drawing child (pid %d) exited with %s; this process draws its %d run(s) instead. "
            "Its stderr: %s",
            self.process.pid, code, self.n_jobs, self._stderr_tail(),
        )  # fmt: skip
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.stderr_file.read_text(errors="replace")[-STDERR_TAIL_CHARS:].strip() or "(empty)"
        return "(unreadable)"


def _start_child(jobs: Sequence[FigureJob], scratch: Path, number: int) -> _Child:
    jobs_file = scratch / f"jobs-{number}.pt"
    result_file = scratch / f"result-{number}.json"
    stderr_file = scratch / f"stderr-{number}.txt"
    torch.save([_on_cpu(job) for job in jobs], jobs_file)
    with stderr_file.open("wb") as stderr:
        process = subprocess.Popen(
            child_command(jobs_file, result_file),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=_child_environment(),
        )  # fmt: skip
    return _Child(process, result_file, stderr_file, len(jobs))


def child_command(jobs_file: Path, result_file: Path) -> list[str]:
    """The command line of a child that draws the jobs in ``jobs_file`` (a seam for tests)."""
    return [sys.executable, "-m", "gni_engine.figures.processes", str(jobs_file), str(result_file)]


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    # One thread each: the children together already use the cores (torch's forward passes are tiny).
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    source_root = str(Path(__file__).resolve().parents[2])  # importable even from an uninstalled checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
    return env


def _on_cpu(job: FigureJob) -> FigureJob:
    state = replace(job.state, weights={k: v.detach().cpu() for k, v in job.state.weights.items()})
    return replace(job, state=state)


def main(argv: Sequence[str]) -> int:
    """Child entry point: draw the pickled jobs in ``argv[0]``, write ``[{name: path}]`` to ``argv[1]``."""
    jobs_file, result_file = (Path(a) for a in argv)
    # The file was written by the parent into its own private temporary folder.
    jobs: list[FigureJob] = torch.load(jobs_file, weights_only=False)
    drawn = _draw_here(jobs)
    result_file.write_text(json.dumps([{name: str(path) for name, path in files.items()} for files in drawn]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
