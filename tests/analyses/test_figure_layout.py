"""Figures readable without the code: no text outside the canvas, no overlapping tick labels, and
the specific choices (frequency order, σ in titles, axis scales, gaps ≤ 0) checked on real runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.text
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

import gni_engine.figures.comparison as comparison
import gni_engine.figures.run as run_module
from gni_engine.data import build_dataset
from gni_engine.figures.style import ARM_COLOURS, as_rows, layer_colours, log_if_decades
from gni_engine.recording import MetricRow
from gni_engine.spec import RunSpec, parse_run_spec
from gni_engine.training import train_batch

REGRESSION: dict[str, Any] = {
    "task": "regression",
    "data": {"name": "sinusoids", "n_points": 64, "frequencies": [2.0, 5.0, 10.0, 20.0]},
    "model": {"hidden": [16, 16]},
    "training": {"steps": 40, "lr": 0.01},
    "analyses": {"record_every": 10, "noise_gap_samples": 8},
}
CLASSIFICATION: dict[str, Any] = {
    "task": "classification",
    "data": {"name": "two_moons", "n_points": 96},
    "model": {"hidden": [16]},
    "training": {"steps": 40, "lr": 0.05},
    "analyses": {"record_every": 10, "noise_gap_samples": 8},
}


def _specs(base: dict[str, Any]) -> list[RunSpec]:
    return [
        parse_run_spec(
            {**base, "training": {**base["training"], "mode": mode}, "noise": {"sigma": sigma}, "seed": seed}
        )
        for mode, sigma in (("baseline", 0.1), ("gni", 0.03), ("gni", 0.3), ("explicit", 0.3))
        for seed in (0, 1)
    ]


class Checked:
    """Replaces the figure modules' ``save``: lays each figure out and records what is unreadable."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.figures: dict[str, Figure] = {}

    def save(self, fig: Figure, out_dir: Path, stem: str) -> dict[str, Path]:
        canvas = FigureCanvasAgg(fig)  # the figures are bare Figure objects, as the real save draws them
        canvas.draw()  # constrained layout included
        renderer = canvas.get_renderer()
        width, height = fig.bbox.width, fig.bbox.height
        ticks: set[int] = set()
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                drawn = []
                for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                    ticks |= {id(tick.label1), id(tick.label2)}
                    if tick.label1.get_visible() and tick.label1.get_text() and tick.get_visible():
                        lo, hi = sorted(axis.get_view_interval())
                        if lo - 1e-12 <= tick.get_loc() <= hi + 1e-12:
                            drawn.append(tick.label1)
                boxes = [label.get_window_extent(renderer) for label in drawn]
                for i, a in enumerate(boxes):
                    for j in range(i + 1, len(boxes)):
                        if a.overlaps(boxes[j]) and drawn[i].get_text() != drawn[j].get_text():
                            self.problems.append(
                                f"{stem}: tick labels overlap ({drawn[i].get_text()}, {drawn[j].get_text()})"
                            )
        for text in fig.findobj(matplotlib.text.Text):
            if id(text) in ticks or not text.get_visible() or not text.get_text().strip():
                continue
            box = text.get_window_extent(renderer)
            if box.x0 < -1 or box.x1 > width + 1 or box.y0 < -1 or box.y1 > height + 1:
                self.problems.append(f"{stem}: text outside the figure: {text.get_text()[:60]!r}")
        self.figures[f"{out_dir.name}/{stem}"] = fig
        return {f"{stem}.png": out_dir / f"{stem}.png"}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checked]:
    checked = Checked()
    patch = pytest.MonkeyPatch()
    patch.setattr(comparison, "save", checked.save)
    patch.setattr(run_module, "save", checked.save)
    root = tmp_path_factory.mktemp("figures")
    try:
        for name, base in (("regression", REGRESSION), ("classification", CLASSIFICATION)):
            specs = _specs(base)
            states = train_batch(specs)
            dataset = build_dataset(specs[0])
            for i, state in enumerate(states):
                run_module.run_figures(state, dataset, root / f"{name}-run{i}")
            runs = [
                (
                    {
                        "training.mode": s.spec.training.mode,
                        "noise.sigma": s.spec.noise.sigma,
                        "seed": s.spec.seed,
                    },
                    s.spec,
                    as_rows(s.metrics),
                    s.summary,
                )
                for s in states
            ]
            comparison.comparison_figures(runs, root / name)
        yield checked
    finally:
        patch.undo()


def test_every_figure_keeps_its_text_on_the_canvas_and_its_tick_labels_apart(drawn: Checked):
    assert len(drawn.figures) >= 30
    assert drawn.problems == []


def test_per_run_titles_say_which_sigma_and_seed(drawn: Checked):
    title = drawn.figures["regression-run2/loss_curves"].axes[0].get_title()
    assert "σ = 0.03" in title and "seed 0" in title
    assert "σ" not in drawn.figures["regression-run0/loss_curves"].axes[0].get_title()  # baseline


def _one_figure(draw: Any, spec: RunSpec, summaries: list[dict[str, Any]]) -> Figure:
    """``draw(groups, out)`` of one comparison figure for runs with these summaries (one seed each)."""
    checked = Checked()
    runs = [({"seed": i}, spec, [], s) for i, s in enumerate(summaries)]
    patch = pytest.MonkeyPatch()
    patch.setattr(comparison, "save", checked.save)
    try:
        draw(comparison.group_runs(runs), Path("unused"))
    finally:
        patch.undo()
    [figure] = checked.figures.values()
    return figure


def test_the_final_spectrum_orders_frequencies_by_value_whatever_the_key_order():
    summaries = [
        {"spectrum_final": {"10": 0.2, "2": 0.9, "5": 0.5}},
        {"spectrum_final": {"5": 0.4, "10": 0.1, "2": 0.8}},
    ]
    ax = _one_figure(comparison.final_spectrum_figure, parse_run_spec(REGRESSION), summaries).axes[0]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["2", "5", "10"]


def test_a_gap_at_or_below_zero_is_counted_not_drawn():
    spec = parse_run_spec({**REGRESSION, "training": {**REGRESSION["training"], "mode": "gni"}})
    summaries = [
        {"R_total": r, "noise_gap": gap} for r, gap in ((1e-3, 1.1e-3), (1e-2, 0.9e-2), (1e-1, -2e-5))
    ]
    ax = _one_figure(comparison.r_vs_gap_figure, spec, summaries).axes[0]
    assert "1 with gap ≤ 0 not shown" in ax.get_title()
    assert ax.get_yscale() == "log" and ax.get_ylim()[0] > 1e-6  # not stretched down to a clipped 1e-12


def test_log_axes_only_where_values_span_a_decade():
    assert log_if_decades([2.25, 2.5]) == "linear"
    assert log_if_decades([2.3, 0.1]) == "log"
    assert log_if_decades([0.0, -1.0, 5.0]) == "linear"  # one positive value: nothing to span


def test_arms_are_labelled_by_what_varies_across_the_runs():
    spec = parse_run_spec({**REGRESSION, "training": {**REGRESSION["training"], "mode": "baseline"}})
    gni = parse_run_spec({**REGRESSION, "training": {**REGRESSION["training"], "mode": "gni"}})
    # training.lr is an axis of one value: it tells no arm apart, and the arms keep their names.
    one_value = [
        ({"training.mode": s.training.mode, "training.lr": 1e-3, "seed": 0}, s, [], {}) for s in (spec, gni)
    ]
    assert [g.label for g in comparison.group_runs(one_value)] == [
        "baseline (no noise)",
        "GNI (noisy training)",
    ]
    two_values = [
        ({"training.mode": "gni", "noise.sigma": sigma, "seed": 0}, gni, [], {}) for sigma in (0.03, 0.3)
    ]
    assert [g.label for g in comparison.group_runs(two_values)] == ["gni, sigma=0.03", "gni, sigma=0.3"]


def test_reliability_diagrams_show_each_bins_share_of_examples_on_an_axis_of_its_own(drawn: Checked):
    for key, columns in (("classification/reliability", 4), ("classification-run2/reliability", 1)):
        figure = drawn.figures[key]
        accuracy, shares = figure.axes[:columns], figure.axes[columns:]
        assert len(shares) == columns
        assert accuracy[0].get_ylabel() == "accuracy" and shares[0].get_ylabel() == "share of\nexamples"
        for ax in shares:
            heights = [patch.get_height() for patch in ax.patches]
            assert sum(heights) == pytest.approx(1.0)  # every held-out example in one bin
        for ax in accuracy:
            assert len(ax.patches) == len(shares[0].patches)  # the accuracy panel holds no share bars


def test_layer_colours_read_from_input_to_output_and_are_not_arm_colours():
    colours = layer_colours(4)
    assert len(set(colours)) == 4 and not set(colours) & set(ARM_COLOURS.values())
    luminance = [0.2126 * r + 0.7152 * g + 0.0722 * b for r, g, b in (to_rgb(c) for c in colours)]
    assert luminance == sorted(luminance)  # dark at the input, light at the output
    assert layer_colours(1) == colours[:1]


def test_layer_norms_of_a_group_whose_first_run_recorded_none_are_drawn():
    spec = parse_run_spec(REGRESSION)
    norms = [MetricRow(step, "layer_norm_0", 1.0 + step) for step in (0, 10)]
    runs = [({"seed": 0}, spec, [], {}), ({"seed": 1}, spec, norms, {})]  # the first: none (failed early)
    checked = Checked()
    patch = pytest.MonkeyPatch()
    patch.setattr(comparison, "save", checked.save)
    try:
        comparison.layer_norms_figure(comparison.group_runs(runs), Path("unused"))
    finally:
        patch.undo()
    [figure] = checked.figures.values()
    assert [line.get_label() for line in figure.axes[0].lines] == ["‖∂h1/∂h0‖_F"]
    assert layer_colours(0) == []
