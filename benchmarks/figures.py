"""Time drawing a batch's run figures in one process and in several.

Trains ``--runs`` short 1-D sinusoid runs (every kind of run figure: loss, learned function,
spectrum, spectral dynamics, layer norms; PNG and SVG), then draws their figures with
:func:`gni_engine.figures.processes.draw_figures`, one process and then ``--processes`` (default:
one per available core), alternating ``--rounds`` times. Prints seconds, seconds a run and the
ratio, and one JSON line with the machine.

    .venv/bin/python benchmarks/figures.py [--runs 16] [--processes N] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib
import torch

from gni_engine.figures.processes import MIN_RUNS_PER_PROCESS, FigureJob, available_cpus, deal, draw_figures
from gni_engine.spec import parse_run_spec
from gni_engine.training import BatchTrainer


def trained_jobs(runs: int, root: Path) -> list[FigureJob]:
    base = {
        "data": {"n_points": 200, "frequencies": [2, 5, 10, 20]},
        "model": {"hidden": [128, 128, 128]},
        "noise": {"sigma": 0.1},
        "training": {"steps": 200},
        "analyses": {"record_every": 20, "noise_gap_samples": 4},
    }
    trainer = BatchTrainer([parse_run_spec({**base, "seed": seed}) for seed in range(runs)])
    states = trainer.run()
    pairs = enumerate(zip(states, trainer.datasets, strict=True))
    return [FigureJob(state, data, root / f"run-{e}") for e, (state, data) in pairs]


def timed(jobs: list[FigureJob], processes: int) -> tuple[float, int]:
    start = time.perf_counter()
    drawn = draw_figures(jobs, processes)
    return time.perf_counter() - start, sum(len(files) for files in drawn)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--processes", type=int, default=available_cpus())
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    chunks = deal(args.runs, args.processes)
    print(
        f"{args.runs} runs; {args.processes} processes asked, {len(chunks)} used "
        f"(at least {MIN_RUNS_PER_PROCESS} runs each); {available_cpus()} cores available"
    )
    with tempfile.TemporaryDirectory() as scratch:
        jobs = trained_jobs(args.runs, Path(scratch))
        times: dict[int, list[float]] = {1: [], args.processes: []}
        for _ in range(args.rounds):
            for processes in times:
                seconds, files = timed(jobs, processes)
                times[processes].append(seconds)
                a_run = seconds / args.runs
                print(f"  {processes:3d} process(es): {seconds:7.2f} s, {a_run:.3f} s a run, {files} files")
    one, many = (statistics.median(times[p]) for p in times)
    print(
        f"median: one process {one:.2f} s, {args.processes} processes {many:.2f} s, ratio {one / many:.2f}×"
    )
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": available_cpus(),
        "torch": torch.__version__,
        "matplotlib": matplotlib.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps({"runs": args.runs, "processes": args.processes, "seconds": times, **machine}))


if __name__ == "__main__":
    main()
