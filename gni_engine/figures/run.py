"""Figures of one run: what it learned and how its measurements moved during training.

Which figures a run gets depends on what applies to it: the learned function, its spectrum and the
spectral dynamics for 1-D sinusoid regression; layer-norm curves for MLPs; the reliability diagram
and margin histograms for classifiers; loss curves always.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gni_engine.analyses.classification import input_margins, output_margins
from gni_engine.data import Dataset
from gni_engine.figures.style import (
    ARM_NAMES,
    as_rows,
    frequency_of,
    layer_colours,
    log_if_decades,
    metric_names,
    new_figure,
    save,
    series,
)
from gni_engine.networks import Network, build_network
from gni_engine.recording import MetricRow
from gni_engine.spec import RunSpec, SinusoidsData
from gni_engine.stacked import view_as_stacked
from gni_engine.training import RunState


def run_figures(state: RunState, dataset: Dataset, figures_dir: Path) -> dict[str, Path]:
    """Every figure that applies to the run, as PNG and SVG in ``figures_dir``: {file name: path}."""
    rows = as_rows(state.metrics)
    spec = state.spec
    title = run_title(spec)
    files: dict[str, Path] = {}
    files |= loss_figure(rows, title, figures_dir)
    if is_sinusoid_1d(spec):
        net = rebuild_network(state, dataset)
        files |= function_figure(net, dataset, title, figures_dir)
        if "spectrum_full" in state.summary:
            files |= spectrum_figure(state.summary["spectrum_full"], dataset, title, figures_dir)
        files |= spectral_dynamics_figure(rows, title, figures_dir)
    if metric_names(rows, "layer_norm_"):
        files |= layer_norm_figure(rows, title, figures_dir)
    if spec.task == "classification" and "reliability" in state.summary:
        files |= reliability_figure(state.summary, title, figures_dir)
        if spec.analyses.margins:
            files |= margin_figure(rebuild_network(state, dataset), dataset, title, figures_dir)
    return files


def run_title(spec: RunSpec) -> str:
    """'GNI (noisy training), σ = 0.1, seed 0': the runs of a σ sweep differ only in σ."""
    parts = [ARM_NAMES.get(spec.training.mode, spec.training.mode)]
    if spec.training.mode != "baseline":
        sigma = spec.noise.sigma
        level = f"{sigma:g}" if isinstance(sigma, float) else "(" + ", ".join(f"{s:g}" for s in sigma) + ")"
        kind = "" if spec.noise.kind == "additive" else f"{spec.noise.kind} "
        parts.append(f"{kind}σ = {level}")
    return ", ".join([*parts, f"seed {spec.seed}"])


def is_sinusoid_1d(spec: RunSpec) -> bool:
    return isinstance(spec.data, SinusoidsData) and spec.data.dim == 1 and spec.task == "regression"


def rebuild_network(state: RunState, dataset: Dataset) -> Network:
    """The run's trained network (clean: evaluation mode) from its weights, in float64."""
    net = build_network(state.spec, dataset.input_shape, dataset.n_outputs, dtype=torch.float64)
    net.load_state_dict({k: v.detach().to("cpu", torch.float64) for k, v in state.weights.items()})
    return net.eval()


def loss_figure(rows: list[MetricRow], title: str, out: Path) -> dict[str, Path]:
    fig = new_figure()
    ax = fig.add_subplot()
    drawn: list[np.ndarray] = []
    for name, label in (("train_loss", "train"), ("test_loss", "test")):
        steps, values = series(rows, name)
        if len(steps):
            ax.plot(steps, values, label=label)
            drawn.append(values)
    scale = log_if_decades(*drawn)  # log only where the loss spans a decade
    ax.set(xlabel="training step", ylabel="loss (clean network)", yscale=scale, title=f"Loss\n{title}")
    if ax.get_yscale() == "linear":
        ax.ticklabel_format(axis="y", useOffset=False)  # '2.4997', not '-0.0003' under a '+2.5'
    ax.legend()
    return save(fig, out, "loss_curves")


def function_figure(net: Network, dataset: Dataset, title: str, out: Path) -> dict[str, Path]:
    meta = dataset.meta
    t = torch.linspace(0, 1, 2000, dtype=torch.float64)[:-1]
    target = np.zeros(len(t))
    for k, a, p in zip(meta["frequencies"], meta["amplitudes"], meta["phases"], strict=True):
        target += a * np.sin(2 * math.pi * k * t.numpy() + p)
    with torch.no_grad():
        learned = net(t.unsqueeze(1))[:, 0].numpy()
    fig = new_figure(width=9.0)
    ax = fig.add_subplot()
    ax.plot(t, target, color="0.6", lw=0.8, label="target Σ A_K sin(2πKt + φ_K)")
    ax.plot(dataset.x_train[:, 0], dataset.y_train[:, 0], ".", color="0.3", ms=3, label="training points")
    ax.plot(t, learned, color="C1", lw=1.2, label="learned function (clean network)")
    ax.set(xlabel="input t", ylabel="output f(t)", title=f"Learned function vs target — {title}")
    fig.legend(loc="outside lower center", ncols=3, fontsize="small")  # below the axes, off the curves
    return save(fig, out, "function")


def spectrum_figure(full: list[float], dataset: Dataset, title: str, out: Path) -> dict[str, Path]:
    fig = new_figure(width=7.0)
    ax = fig.add_subplot()
    ax.plot(np.arange(len(full)), full, color="C1", lw=1.2, label="learned |c_ω|")
    freqs = np.asarray(dataset.meta["frequencies"])
    ax.plot(freqs, np.abs(dataset.meta["amplitudes"]) / 2, "kx", label="target |A_K| / 2")
    ax.set(xlabel="frequency ω (Hz, cycles per unit of t)", ylabel="amplitude |FFT| / n")
    # Log: the high-frequency content GNIs suppress is 1e-3 of the peaks, flat at 0 on a linear axis.
    if log_if_decades(full) == "log":
        values = np.asarray(full, dtype=float)
        positive = values[np.isfinite(values) & (values > 0)]
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(positive.min(), positive.max() * 1e-5) / 2)
    ax.set_title(f"Spectrum of the learned function — {title}")
    ax.legend()
    return save(fig, out, "spectrum")


def dynamics_matrix(rows: list[MetricRow]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps (T,), frequencies (K,), amplitudes (K, T)) from ``amplitude_{K}Hz`` metrics."""
    names = metric_names(rows, "amplitude_")
    if not names:
        return np.zeros(0), np.zeros(0), np.zeros((0, 0))
    steps = series(rows, names[0])[0]
    matrix = np.stack([series(rows, n)[1] for n in names])
    return steps, np.asarray([frequency_of(n) for n in names]), matrix


MAX_FREQUENCY_TICKS = 16


def draw_heatmap(ax: Any, steps: np.ndarray, freqs: np.ndarray, matrix: np.ndarray) -> Any:
    """One row per target frequency (labelled with it, whatever the spacing), one column per record."""
    half = (steps[-1] - steps[0]) / (len(steps) - 1) / 2 if len(steps) > 1 else 0.5
    extent = (steps[0] - half, steps[-1] + half, -0.5, len(freqs) - 0.5)
    image = ax.imshow(
        np.clip(matrix, 0, 1), aspect="auto", origin="lower", vmin=0, vmax=1, cmap="viridis",
        extent=extent, interpolation="nearest",
    )  # fmt: skip
    every = max(1, -(-len(freqs) // MAX_FREQUENCY_TICKS))  # at most that many labels
    rows = np.arange(0, len(freqs), every)
    ax.set_yticks(rows, [f"{freqs[i]:g}" for i in rows])
    ax.set(xlabel="training step", ylabel="target frequency K (Hz)")
    return image


def spectral_dynamics_figure(rows: list[MetricRow], title: str, out: Path) -> dict[str, Path]:
    steps, freqs, matrix = dynamics_matrix(rows)
    if not len(steps):
        return {}
    fig = new_figure(width=6.0)
    ax = fig.add_subplot()
    image = draw_heatmap(ax, steps, freqs, matrix)
    fig.colorbar(image, ax=ax, label="learned amplitude 2|c_K| / |A_K|", extend="max")  # > 1 shows as 1
    ax.set_title(f"Spectral dynamics — {title}")
    return save(fig, out, "spectral_dynamics")


def layer_norm_figure(rows: list[MetricRow], title: str, out: Path) -> dict[str, Path]:
    fig = new_figure()
    ax = fig.add_subplot()
    names = metric_names(rows, "layer_norm_")
    for name, colour in zip(names, layer_colours(len(names)), strict=True):
        i = int(name.removeprefix("layer_norm_"))
        ax.plot(*series(rows, name), color=colour, label=f"‖∂h{i + 1}/∂h{i}‖_F")
    ax.set(
        xlabel="training step",
        ylabel="Frobenius norm (batch mean)",
        title=f"Layer-to-layer Jacobians\n{title}",
    )
    ax.legend(fontsize="small", title="input → output" if len(names) > 1 else None, title_fontsize="small")
    return save(fig, out, "layer_norms")


def reliability_axes(fig: Any, cols: int) -> tuple[list[Any], list[Any]]:
    """A column per diagram: accuracy above, the share of examples per bin in a short panel below."""
    grid = fig.add_gridspec(2, cols, height_ratios=(3, 1))
    top = [fig.add_subplot(grid[0, j]) for j in range(cols)]
    bottom = [fig.add_subplot(grid[1, j], sharex=top[j]) for j in range(cols)]
    for ax in top[1:]:
        ax.sharey(top[0])
    for ax in bottom[1:]:
        ax.sharey(bottom[0])
    return top, bottom


def draw_reliability(ax: Any, share_ax: Any, reliability: dict[str, Any]) -> None:
    """Accuracy per confidence bin against the diagonal on ``ax``; how many examples each bin holds
    on ``share_ax`` (its own axis: a bin's accuracy means little when it holds few examples)."""
    edges = np.asarray(reliability["edges"], dtype=float)
    acc = np.asarray([np.nan if v is None else v for v in reliability["accuracy"]], dtype=float)
    counts = np.asarray(reliability["counts"], dtype=float)
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    ax.bar(
        centres, np.nan_to_num(acc), width=width, edgecolor="k", lw=0.5, color="C0", label="accuracy in bin"
    )
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.tick_params(labelbottom=False)
    share = counts / max(counts.sum(), 1)
    share_ax.bar(centres, share, width=width, edgecolor="k", lw=0.5, color="0.6")
    share_ax.set(xlabel="confidence (max softmax probability)", ylabel="share of\nexamples", ylim=(0, 1))


def reliability_figure(summary: dict[str, Any], title: str, out: Path) -> dict[str, Path]:
    fig = new_figure(height=4.6)
    [ax], [share_ax] = reliability_axes(fig, 1)
    draw_reliability(ax, share_ax, summary["reliability"])
    ax.set_title(f"Reliability (ECE {summary['ece']:.3f}, {summary['eval_split']} split)\n{title}")
    ax.legend(loc="upper left", fontsize="small")
    return save(fig, out, "reliability")


def margin_figure(net: Network, dataset: Dataset, title: str, out: Path) -> dict[str, Path]:
    split_x, split_y = (
        (dataset.x_test, dataset.y_test) if len(dataset.x_test) else (dataset.x_train, dataset.y_train)
    )
    x = split_x.to(torch.float64).unsqueeze(0)  # (1, N, …)
    labels = split_y.unsqueeze(0)
    stacked = view_as_stacked(net)
    with torch.no_grad():
        logits = stacked.forward(x).output
    margins = {
        "output margin f_y − max_{j≠y} f_j (logit units)": output_margins(logits, labels)[0].numpy(),
        "input margin (f_y − f_j) / ‖∇ₓ(f_y − f_j)‖ (input units)": input_margins(stacked, x, labels)[
            0
        ].numpy(),
    }
    fig = new_figure(cols=2)
    for i, (label, values) in enumerate(margins.items()):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.hist(values, bins=40, color="C0")
        ax.axvline(0, color="k", lw=0.8)
        ax.set(xlabel=label, ylabel="examples")
    fig.suptitle(f"Margins on held-out data (negative = misclassified) — {title}")
    return save(fig, out, "margins")
