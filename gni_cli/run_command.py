"""``gni run SPEC --out DIR``: train a run or a sweep locally with the engine and write its results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="train a run or a sweep locally (no service needed)",
        description="Train the runs of a spec file (YAML or JSON; a run or a sweep with base/axes) and "
        "write results.json, model.safetensors, metrics.csv and spec.json per run.",
    )
    parser.add_argument("spec", nargs="?", help="run or sweep spec file (.yaml/.yml/.json)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--no-batch", action="store_true", help="train runs one by one instead of stacked")
    parser.add_argument(
        "--no-figures",
        action="store_true",
        help="skip each run's figures (1-3 s of drawing a run: in a large sweep more than the training)",
    )
    parser.add_argument(
        "--figure-processes",
        type=positive_int,
        metavar="N",
        help="processes that draw the runs' figures (default: one per available core)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--preset",
        metavar="NAME",
        help="run one of the paper's experiments instead of a spec file: "
        "spectral-bias, regulariser-validity, explicit-vs-gni, calibration-margins",
    )
    parser.add_argument(
        "--steps", type=int, metavar="N", help="with --preset: train N steps (default: the paper's)"
    )
    parser.add_argument(
        "--seeds", type=int, metavar="N", help="with --preset: N seeds (default: the paper's)"
    )
    parser.set_defaults(handler=handle_run)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def handle_run(args: argparse.Namespace) -> int:
    from gni_engine.errors import SpecError
    from gni_engine.sweep import load_spec_file

    if args.no_figures and args.figure_processes is not None:
        raise SpecError("--figure-processes says who draws the figures; --no-figures draws none")
    if args.preset is not None:
        if args.spec is not None:
            raise SpecError("give a spec file or --preset NAME, not both")
        if args.no_figures:
            raise SpecError("--no-figures goes with a spec file: a preset's figures are its result")
        return run_preset_to_folder(args)
    if args.steps is not None or args.seeds is not None:
        raise SpecError("--steps and --seeds go with --preset")
    if args.spec is None:
        raise SpecError("give a spec file (or --preset NAME)")
    sweep = load_spec_file(args.spec)
    return run_sweep_to_folder(
        sweep,
        args.out,
        batch=not args.no_batch,
        quiet=args.quiet,
        figures=not args.no_figures,
        figure_processes=args.figure_processes,
    )


def run_preset_to_folder(args: argparse.Namespace) -> int:
    """``--preset``: run the paper's experiment and print where its summary is."""
    from gni_engine.presets import run_preset

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr)

    out = run_preset(
        args.preset,
        args.out,
        steps=args.steps,
        seeds=args.seeds,
        batch=not args.no_batch,
        progress=say,
        figure_processes=args.figure_processes,
    )
    results = json.loads((out / "results.json").read_text())
    failed = [r for r in results["runs"] if r["status"] != "succeeded"]
    print(
        f"{args.preset}: {len(results['runs'])} runs, {len(failed)} not succeeded; "
        f"summary: {out / 'summary.md'}"
    )
    return 0 if not failed else 1


def run_sweep_to_folder(
    sweep: Any,
    out: Path,
    *,
    batch: bool,
    quiet: bool,
    figures: bool = True,
    figure_processes: int | None = None,
) -> int:
    """Expand, train and write every run of ``sweep`` under ``out``; print a summary table."""
    from gni_engine.execution import execute_runs
    from gni_engine.sweep import expand_sweep

    runs = expand_sweep(sweep)
    single = len(runs) == 1 and not sweep.axes
    out_dirs = [
        out if single else out / "runs" / f"{i:04d}-{spec.spec_hash()[:8]}"
        for i, (_, spec) in enumerate(runs)
    ]
    specs = [spec for _, spec in runs]
    progress = _Progress(sum(s.training.steps for s in specs), quiet=quiet)
    try:
        outcomes = execute_runs(
            specs, out_dirs, progress, batch=batch, figures=figures, figure_processes=figure_processes
        )
    finally:
        progress.close()
    if not single:
        out.mkdir(parents=True, exist_ok=True)
        table = [
            {
                "index": o.index,
                "coords": coords,
                "status": o.status,
                "error": o.error,
                "folder": str(d),
                "summary": o.summary,
            }
            for o, (coords, _), d in zip(outcomes, runs, out_dirs, strict=True)
        ]
        (out / "sweep.json").write_text(
            json.dumps({"sweep": sweep.model_dump(mode="json"), "runs": table}, indent=2)
        )
        if figures:
            _comparison_figures(runs, outcomes, out_dirs, out / "figures")
    _print_table(runs, outcomes, out)
    return 0 if all(o.status == "succeeded" for o in outcomes) else 1


def _comparison_figures(runs: Any, outcomes: Any, out_dirs: list[Path], figures_dir: Path) -> None:
    """The arms of the sweep side by side, as the service and the presets draw them, from metrics.csv."""
    import csv

    from gni_engine.figures import comparison_figures

    done = []
    for (coords, spec), outcome, folder in zip(runs, outcomes, out_dirs, strict=True):
        if outcome.status == "succeeded":
            with (folder / "metrics.csv").open(newline="") as f:
                rows = [{k: r[k] for k in ("step", "name", "value")} for r in csv.DictReader(f)]
            done.append((coords, spec, rows, outcome.summary))
    if done:
        comparison_figures(done, figures_dir)


class _Progress:
    """A tqdm bar over all steps of all runs (stderr), or nothing when quiet or not a terminal."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        self.bar: Any = None
        self.done: dict[int, int] = {}
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)

    def on_start(self, index: int) -> None:
        self.done.setdefault(index, 0)

    def on_progress(self, index: int, step: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(step - self.done.get(index, 0))
        self.done[index] = step

    def on_metrics(self, index: int, rows: Any) -> None:
        return None

    def should_cancel(self, index: int) -> bool:
        return False

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _print_table(runs: Any, outcomes: Any, out: Path) -> None:
    keys = ["train_loss", "test_loss", "R_total", "noise_gap", "noise_gap_stderr", "test_accuracy", "ece"]
    shown = [k for k in keys if any(k in o.summary for o in outcomes)]
    coord_keys = list(runs[0][0]) if runs else []
    header = ["#", *coord_keys, "status", *shown]
    rows = [
        [
            str(o.index),
            *(_fmt(coords[k]) for k in coord_keys),
            o.status,
            *(_fmt(o.summary.get(k)) for k in shown),
        ]
        for o, (coords, _) in zip(outcomes, runs, strict=True)
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    for o in outcomes:
        if o.error:
            print(f"run {o.index}: {o.status}: {o.error}")
    first = outcomes[0].summary if outcomes else {}
    if first:
        print(
            f"device: {first.get('device')} ({first.get('device_name')}), "
            f"precision {first.get('precision')}, noise {first.get('noise_stream')}, "
            f"engine {first.get('engine_version')} (code {first.get('engine_fingerprint')}), "
            f"torch {first.get('torch_version')}"
        )
    print(f"results written to {out}")
