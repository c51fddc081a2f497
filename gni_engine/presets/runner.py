"""Running a preset end to end: train (or evaluate) its sweeps, then write one folder a reader can use.

``run_preset(name, out_dir)`` writes::

    out_dir/
      metrics.csv        tidy table: run, variant, step, name, value + one column per sweep coordinate
      results.json       settings, machine, per-run summaries, the claims with their measured numbers
      summary.md         each claim of the paper next to the number measured and whether it holds
      figures/<variant>/ comparison figures (PNG and SVG)
      <variant>/runs/<run>/  each trained run's own files and figures
"""

from __future__ import annotations

import csv
import json
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gni_engine import __version__
from gni_engine.analyses.validity import regulariser_at_init
from gni_engine.execution import execute_runs
from gni_engine.figures import comparison_figures
from gni_engine.presets.claims import Claim, evaluate_claims
from gni_engine.presets.definitions import get_preset, preset_variants
from gni_engine.presets.report import render_summary
from gni_engine.recording import MetricRow
from gni_engine.spec import RunSpec
from gni_engine.sweep import Coordinates, expand_sweep


@dataclass
class PresetRun:
    """One run of a preset with everything the report needs."""

    variant: str
    label: str
    coords: Coordinates
    spec: RunSpec
    status: str
    error: str | None = None
    metrics: list[MetricRow] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


class _Collector:
    """RunHooks that keeps every run's metric rows in memory."""

    def __init__(self, n: int) -> None:
        self.rows: list[list[MetricRow]] = [[] for _ in range(n)]

    def on_start(self, index: int) -> None:
        """Nothing to do when a run starts."""

    def on_progress(self, index: int, step: int, total: int) -> None:
        """Progress is not reported."""

    def on_metrics(self, index: int, rows: Sequence[MetricRow]) -> None:
        self.rows[index].extend(rows)

    def should_cancel(self, index: int) -> bool:
        return False


def run_label(coords: Coordinates) -> str:
    """Folder-safe run name from its coordinates: ``mode-gni_seed-0``."""
    parts = []
    for key, value in coords.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key.split('.')[-1]}-{text}")
    return "_".join(parts).replace("/", "-") or "run"


def _trained_runs(
    variant: str,
    expanded: list[tuple[Coordinates, RunSpec]],
    runs_dir: Path,
    batch: bool,
    figure_processes: int | None,
) -> list[PresetRun]:
    specs = [spec for _, spec in expanded]
    labels = [run_label(c) for c, _ in expanded]
    collector = _Collector(len(specs))
    out_dirs = [runs_dir / label for label in labels]
    outcomes = execute_runs(specs, out_dirs, collector, batch=batch, figure_processes=figure_processes)
    return [
        PresetRun(variant, label, coords, spec, o.status, o.error, collector.rows[o.index], dict(o.summary))
        for (coords, spec), label, o in zip(expanded, labels, outcomes, strict=True)
    ]


def _validity_runs(variant: str, expanded: list[tuple[Coordinates, RunSpec]]) -> list[PresetRun]:
    values = regulariser_at_init([spec for _, spec in expanded])
    runs = []
    for (coords, spec), summary in zip(expanded, values, strict=True):
        rows = [
            MetricRow(0, k, float(summary[k]))
            for k in ("R_total", "noise_gap", "noise_gap_stderr", "clean_loss")
        ]
        rows += [MetricRow(0, f"R_layer_{k}", float(v)) for k, v in enumerate(summary["R_per_layer"])]
        runs.append(PresetRun(variant, run_label(coords), coords, spec, "succeeded", None, rows, summary))
    return runs


def run_preset(
    name: str,
    out_dir: str | Path,
    *,
    steps: int | None = None,
    seeds: int | None = None,
    batch: bool = True,
    overrides: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    figure_processes: int | None = None,
) -> Path:
    """Run preset ``name`` (every variant) into ``out_dir`` and return that folder.

    ``steps`` / ``seeds`` scale the paper's settings down (None: the paper's); ``batch=False`` trains
    runs one at a time instead of stacked; ``overrides`` (dotted paths of the base run) shrink it
    further, e.g. ``{"model.hidden": [64, 64]}``. ``progress`` receives one line per stage;
    ``figure_processes`` is as in :func:`~gni_engine.execution.execute_runs`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _line: None)
    start = time.perf_counter()
    runs: list[PresetRun] = []
    figures: dict[str, list[str]] = {}
    settings: dict[str, Any] = {}
    for variant in preset_variants(name):
        sweep = get_preset(name, steps=steps, seeds=seeds, variant=variant, overrides=overrides)
        settings[variant] = sweep.model_dump(mode="json")
        expanded = expand_sweep(sweep)
        say(f"{name} [{variant}]: {len(expanded)} runs")
        t0 = time.perf_counter()
        if name == "regulariser-validity":
            variant_runs = _validity_runs(variant, expanded)
        else:
            runs_dir = out / variant / "runs"
            variant_runs = _trained_runs(variant, expanded, runs_dir, batch, figure_processes)
        say(f"{name} [{variant}]: done in {time.perf_counter() - t0:.1f} s")
        runs.extend(variant_runs)
        done = [(r.coords, r.spec, r.metrics, r.summary) for r in variant_runs if r.status == "succeeded"]
        files = comparison_figures(done, out / "figures" / variant)
        figures[variant] = sorted(str(p.relative_to(out)) for p in files.values())
    write_metrics_table(runs, out / "metrics.csv")
    claims = evaluate_claims(name, runs)
    results = {
        "preset": name,
        "scale": {
            "steps": steps,
            "seeds": seeds,
            "overrides": dict(overrides or {}),
            "paper_settings": steps is None and seeds is None and not overrides,
        },
        "machine": machine(),
        "wall_time_s": time.perf_counter() - start,
        "settings": settings,
        "claims": [c.as_dict() for c in claims],
        "figures": figures,
        "runs": [
            {
                "variant": r.variant,
                "run": r.label,
                "coords": r.coords,
                "status": r.status,
                "error": r.error,
                "summary": r.summary,
            }
            for r in runs
        ],
    }
    (out / "results.json").write_text(
        json.dumps(json_safe(results), indent=2, sort_keys=True, allow_nan=False) + "\n"
    )
    (out / "summary.md").write_text(render_summary(name, results, claims))
    say(f"{name}: wrote {out} in {time.perf_counter() - start:.1f} s")
    return out


def write_metrics_table(runs: Sequence[PresetRun], path: Path) -> None:
    """One tidy CSV: run, variant, step, name, value and a column per coordinate (loads into pandas)."""
    keys: list[str] = []
    for r in runs:
        keys.extend(k for k in r.coords if k not in keys)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "variant", "step", "name", "value", *keys])
        for r in runs:
            coords = [
                json.dumps(r.coords[k]) if isinstance(r.coords.get(k), dict | list) else r.coords.get(k, "")
                for k in keys
            ]
            writer.writerows(
                [f"{r.variant}/{r.label}", r.variant, m.step, m.name, repr(m.value), *coords]
                for m in r.metrics
            )


def machine() -> dict[str, Any]:
    """Where the numbers came from."""
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0)
        if cuda
        else f"CPU ({platform.processor() or platform.machine()})",
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "engine_version": __version__,
    }


def json_safe(value: Any) -> Any:
    """Non-finite floats become None; tuples become lists; mappings get string keys."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Claim):
        return value.as_dict()
    return value
