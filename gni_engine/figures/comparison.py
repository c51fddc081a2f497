"""Experiment-level figures: the arms of a sweep side by side on shared axes, with bands over seeds.

``comparison_figures(runs, out_dir)`` takes one entry per run::

    (coordinates, spec, metrics, summary)

``coordinates`` is the run's sweep coordinates (``{"training.mode": "gni", "seed": 0}``), ``spec`` its
:class:`~gni_engine.spec.RunSpec`, ``metrics`` its rows over training (``MetricRow`` or mappings with
``step``, ``name``, ``value``) and ``summary`` its results summary. Runs are grouped by every
coordinate except ``seed``; a group's curve is the mean over its seeds with a min–max band.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gni_engine.figures.run import draw_heatmap, draw_reliability, dynamics_matrix, reliability_axes
from gni_engine.figures.style import (
    ARM_COLOURS,
    ARM_NAMES,
    EXTRA_COLOURS,
    MetricLike,
    as_rows,
    layer_colours,
    log_if_decades,
    metric_names,
    new_figure,
    save,
    series,
)
from gni_engine.recording import MetricRow
from gni_engine.spec import RunSpec

ComparisonRun = tuple[Mapping[str, Any], RunSpec, Iterable[MetricLike], Mapping[str, Any]]
SEED_KEYS = frozenset({"seed", "data_seed"})


@dataclass
class Group:
    """The runs of one arm (all coordinates but the seed equal)."""

    label: str
    colour: str
    mode: str
    rows: list[list[MetricRow]]
    summaries: list[Mapping[str, Any]]
    specs: list[RunSpec]


def group_runs(runs: Sequence[ComparisonRun]) -> list[Group]:
    """Groups in first-seen order; labelled by arm name plus any other varying coordinate."""
    groups: dict[str, Group] = {}
    # An axis of one value (``training.lr: [1e-3]``) names nothing that tells the arms apart.
    seen: dict[str, set[str]] = {}
    for coords, *_ in runs:
        for k, v in coords.items():
            seen.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    varying = {k for k, values in seen.items() if len(values) > 1}
    for coords, spec, metrics, summary in runs:
        others = {
            k: v for k, v in coords.items() if k in varying and k not in SEED_KEYS and k != "training.mode"
        }
        mode = spec.training.mode
        label = (
            ARM_NAMES.get(mode, mode)
            if not others
            else ", ".join([mode, *(f"{_short(k)}={_fmt(v)}" for k, v in others.items())])
        )
        if label not in groups:
            colour = (
                ARM_COLOURS.get(mode, "C0") if not others else EXTRA_COLOURS[len(groups) % len(EXTRA_COLOURS)]
            )
            groups[label] = Group(label, colour, mode, [], [], [])
        group = groups[label]
        group.rows.append(as_rows(metrics))
        group.summaries.append(summary)
        group.specs.append(spec)
    return list(groups.values())


def _short(path: str) -> str:
    return path.split(".")[-1]


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def comparison_figures(runs: Sequence[ComparisonRun], out_dir: Path) -> dict[str, Path]:
    """Every comparison figure the runs support, as PNG and SVG in ``out_dir``: {file name: path}.

    Loss (and accuracy, ECE) curves per arm; layer-norm curves per arm; spectral-dynamics heatmaps and
    final amplitudes per arm; R against the Monte-Carlo noise gap with the identity line; reliability
    diagrams and margin quantiles per arm. Figures whose metrics no run has are skipped.
    """
    groups = group_runs(runs)
    if not groups:
        return {}
    files: dict[str, Path] = {}
    files |= curves_figure(groups, out_dir)
    files |= layer_norms_figure(groups, out_dir)
    files |= dynamics_figure(groups, out_dir)
    files |= final_spectrum_figure(groups, out_dir)
    files |= r_vs_gap_figure(groups, out_dir)
    files |= reliability_figure(groups, out_dir)
    files |= margins_figure(groups, out_dir)
    return files


def _band(ax: Any, rows: list[list[MetricRow]], name: str, colour: str, label: str) -> bool:
    """Mean over runs with a min–max band, on the steps every run recorded."""
    curves = [series(r, name) for r in rows]
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return False
    length = min(len(c[0]) for c in curves)
    steps = curves[0][0][:length]
    values = np.stack([c[1][:length] for c in curves])
    ax.plot(steps, values.mean(0), color=colour, label=label, lw=1.3)
    if len(curves) > 1:
        ax.fill_between(steps, values.min(0), values.max(0), color=colour, alpha=0.2, lw=0)
    return True


CURVES = (
    ("train_loss", "train loss (clean network)", "log"),
    ("test_loss", "test loss (clean network)", "log"),
    ("test_accuracy", "test accuracy", "linear"),
    ("ece", "expected calibration error", "linear"),
)


def curves_figure(groups: list[Group], out: Path) -> dict[str, Path]:
    present = [c for c in CURVES if any(series(r, c[0])[0].size for g in groups for r in g.rows)]
    if not present:
        return {}
    fig = new_figure(cols=len(present))
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    for ax, (name, label, scale) in zip(axes, present, strict=True):
        for g in groups:
            _band(ax, g.rows, name, g.colour, g.label)
        if scale == "log":
            scale = log_if_decades(*(series(r, name)[1] for g in groups for r in g.rows))
        ax.set(xlabel="training step", ylabel=label, yscale=scale, title=label.capitalize())
        if scale == "linear":
            ax.ticklabel_format(axis="y", useOffset=False)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"Training curves per arm\n(mean over seeds, band = min–max; {_seeds(groups)})")
    return save(fig, out, "loss_curves")


def _seeds(groups: list[Group]) -> str:
    counts = sorted({len(g.rows) for g in groups})
    if len(counts) > 1:
        return f"{counts[0]}–{counts[-1]} seeds"
    return "1 seed" if counts[0] == 1 else f"{counts[0]} seeds"


def _layer_names(group: Group) -> list[str]:
    """The layer-norm series any run of the group recorded, input side first."""
    names = {name for rows in group.rows for name in metric_names(rows, "layer_norm_")}
    return sorted(names, key=lambda name: int(name.removeprefix("layer_norm_")))


def layer_norms_figure(groups: list[Group], out: Path) -> dict[str, Path]:
    with_norms = [g for g in groups if any(metric_names(r, "layer_norm_") for r in g.rows)]
    if not with_norms:
        return {}
    fig = new_figure(cols=len(with_norms), height=3.6)
    axes = fig.subplots(1, len(with_norms), sharey=True, squeeze=False)[0]
    for ax, g in zip(axes, with_norms, strict=True):
        names = _layer_names(g)
        for name, colour in zip(names, layer_colours(len(names)), strict=True):
            i = int(name.removeprefix("layer_norm_"))
            _band(ax, g.rows, name, colour, f"‖∂h{i + 1}/∂h{i}‖_F")
        ax.set(xlabel="training step", title=g.label)
    axes[0].set_ylabel("layer-to-layer Jacobian norm (batch mean)")
    axes[0].legend(
        fontsize="small",
        title="input → output" if max(len(_layer_names(g)) for g in with_norms) > 1 else None,
        title_fontsize="small",
    )
    fig.suptitle(f"Layer-to-layer Jacobian norms over training (band = min–max over {_seeds(with_norms)})")
    return save(fig, out, "layer_norms")


def dynamics_figure(groups: list[Group], out: Path) -> dict[str, Path]:
    mats = []
    for g in groups:
        parts = [dynamics_matrix(r) for r in g.rows]
        parts = [p for p in parts if p[0].size]
        if parts:
            length = min(p[2].shape[1] for p in parts)
            mean = np.mean([p[2][:, :length] for p in parts], axis=0)
            mats.append((g, parts[0][0][:length], parts[0][1], mean))
    if not mats:
        return {}
    fig = new_figure(cols=len(mats), width=4.2, height=3.6)
    axes = fig.subplots(1, len(mats), sharey=True, squeeze=False)[0]
    image = None
    for ax, (g, steps, freqs, mean) in zip(axes, mats, strict=True):
        image = draw_heatmap(ax, steps, freqs, mean)
        ax.set_title(g.label)
    assert image is not None
    fig.colorbar(image, ax=list(axes), label="amplitude 2|c_K| / |A_K|, seed mean", extend="max")
    fig.suptitle("Spectral dynamics: amplitude of each target frequency over training")
    return save(fig, out, "spectral_dynamics")


def final_spectrum_figure(groups: list[Group], out: Path) -> dict[str, Path]:
    with_spec = [g for g in groups if all("spectrum_final" in s for s in g.summaries)]
    if not with_spec:
        return {}
    # Keys are frequency labels ("5", "10", "2.5"): order them by value, not by the dict's order,
    # which a sort_keys JSON round trip (results.json) or JSONB makes lexicographic ("10" < "5").
    freqs = sorted({f for g in with_spec for s in g.summaries for f in s["spectrum_final"]}, key=float)
    fig = new_figure(width=7.5)
    ax = fig.add_subplot()
    width = 0.8 / len(with_spec)
    x = np.arange(len(freqs))
    for i, g in enumerate(with_spec):
        values = np.asarray(
            [[s["spectrum_final"].get(f, np.nan) for f in freqs] for s in g.summaries], dtype=float
        )
        ax.bar(
            x + (i - (len(with_spec) - 1) / 2) * width,
            values.mean(0),
            width,
            yerr=values.std(0),
            color=g.colour,
            label=g.label,
        )
    ax.set_xticks(x, [f"{f}" for f in freqs])
    ax.axhline(1.0, color="k", lw=0.6, ls="--")
    ax.set(
        xlabel="target frequency K (Hz)",
        ylabel="learned amplitude 2|c_K| / |A_K|",
        title="Final amplitude per target frequency (mean ± sd over seeds)",
    )
    ax.legend(fontsize="small")
    return save(fig, out, "final_spectrum")


def r_vs_gap_figure(groups: list[Group], out: Path) -> dict[str, Path]:
    points = [
        (float(s["R_total"]), float(s["noise_gap"]), spec.injection_sigmas(), g.mode)
        for g in groups
        for s, spec in zip(g.summaries, g.specs, strict=True)
        if s.get("R_total") is not None and s.get("noise_gap") is not None and float(s["R_total"]) > 0
    ]
    # A Monte-Carlo gap can come out <= 0; on log axes it has no place (clipping it to 1e-12 stretched
    # the axes over ten decades and drew a value that was never measured): count it in the title.
    shown = [p for p in points if p[1] > 0]
    if not shown:
        return {}
    fig = new_figure(height=4.0)
    ax = fig.add_subplot()
    levels = sorted({round(max(sig) ** 2, 6) for _, _, sig, _ in shown})
    modes = list(dict.fromkeys(mode for *_, mode in shown))
    markers = dict(zip(modes, "o^sDv", strict=False))
    for i, level in enumerate(levels):
        for mode in modes:
            chosen = [(r, gap) for r, gap, sig, m in shown if round(max(sig) ** 2, 6) == level and m == mode]
            if not chosen:
                continue
            r_vals, gaps = np.asarray(chosen).T
            arm = f", {ARM_NAMES.get(mode, mode)}" if len(modes) > 1 else ""
            ax.scatter(
                r_vals,
                gaps,
                s=14,
                alpha=0.7,
                marker=markers.get(mode, "o"),
                color=EXTRA_COLOURS[i % len(EXTRA_COLOURS)],
                label=f"σ² = {level:g}{arm}",
            )
    values = [v for r, gap, _, _ in shown for v in (r, gap)]
    lo, hi = min(values), max(values)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="identity: gap = R")
    scale = log_if_decades(values)  # less than a decade: log ticks overlap
    ax.set(
        xscale=scale,
        yscale=scale,
        xlabel="explicit regulariser R",
        ylabel="Monte-Carlo gap E[L(noisy)] − L(clean)",
    )
    hidden = len(points) - len(shown)
    note = f"; {hidden} with gap ≤ 0 not shown" if hidden else ""
    ax.set_title(f"R against the actual effect of the noise\n({len(shown)} networks{note})")
    ax.legend(fontsize="small")
    return save(fig, out, "r_vs_gap")


def _pooled_reliability(summaries: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Seeds pooled: counts summed, confidence and accuracy averaged with the counts as weights."""
    counts = np.asarray([s["reliability"]["counts"] for s in summaries], dtype=float)
    acc = np.asarray(
        [[np.nan if v is None else v for v in s["reliability"]["accuracy"]] for s in summaries], dtype=float
    )
    total = counts.sum(0)
    pooled = np.where(total > 0, np.nansum(np.nan_to_num(acc) * counts, 0) / np.maximum(total, 1), np.nan)
    return {
        "edges": summaries[0]["reliability"]["edges"],
        "counts": total.tolist(),
        "accuracy": pooled.tolist(),
    }


def reliability_figure(groups: list[Group], out: Path) -> dict[str, Path]:
    with_rel = [g for g in groups if all("reliability" in s for s in g.summaries)]
    if not with_rel:
        return {}
    fig = new_figure(cols=len(with_rel), width=3.8, height=4.8)
    axes, share_axes = reliability_axes(fig, len(with_rel))
    for ax, share_ax, g in zip(axes, share_axes, with_rel, strict=True):
        draw_reliability(ax, share_ax, _pooled_reliability(g.summaries))
        eces = np.asarray([s["ece"] for s in g.summaries], dtype=float)
        spread = f" ± {eces.std():.3f}" if len(eces) > 1 else ""  # no '± 0.000' from one seed
        ax.set_title(f"{g.label}\nECE {eces.mean():.3f}{spread}")
    for ax in [*axes, *share_axes]:
        ax.label_outer()  # the accuracy and share scales once, at the left
    axes[0].legend(loc="upper left", fontsize="x-small")
    fig.suptitle(f"Reliability diagrams (held-out data, {_seeds(with_rel)} pooled)")
    return save(fig, out, "reliability")


def margins_figure(groups: list[Group], out: Path) -> dict[str, Path]:
    keys = (
        ("output_margin_quantiles", "output margin f_y − max f_j (logits)"),
        ("input_margin_quantiles", "first-order input margin (input units)"),
    )
    with_m = [g for g in groups if all(keys[0][0] in s for s in g.summaries)]
    if not with_m:
        return {}
    fig = new_figure(cols=2)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    for ax, (key, label) in zip(axes, keys, strict=True):
        for g in with_m:
            levels = np.asarray(g.summaries[0]["quantile_levels"], dtype=float)
            values = np.asarray([s[key] for s in g.summaries], dtype=float)
            ax.plot(values.mean(0), levels, color=g.colour, label=g.label, lw=1.3)
            if len(values) > 1:
                ax.fill_betweenx(levels, values.min(0), values.max(0), color=g.colour, alpha=0.2, lw=0)
        ax.axvline(0, color="k", lw=0.6)
        ax.set(
            xlabel=label,
            ylabel="share of held-out examples below (CDF)",
            title=label.split(" (")[0].capitalize(),
        )
    axes[0].legend(fontsize="small")
    fig.suptitle("Margin distributions per arm (quantiles 5–95 %, mean over seeds, band = min–max)")
    return save(fig, out, "margins")
