"""The spectral-dynamics heatmap: each target frequency's row where its label says, whatever the spacing."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

from gni_engine.figures.run import MAX_FREQUENCY_TICKS, draw_heatmap


@pytest.mark.parametrize("freqs", [(1.0, 2.0, 3.0), (5.0, 10.0, 20.0, 40.0), (5.0, 10.0, 15.0)])
def test_each_frequency_row_sits_at_its_label_and_each_record_at_its_step(freqs):
    steps = np.array([0.0, 100.0, 200.0, 300.0])
    matrix = np.arange(len(freqs) * len(steps), dtype=float).reshape(len(freqs), len(steps)) / 100
    ax = Figure().add_subplot()
    image = draw_heatmap(ax, steps, np.asarray(freqs), matrix)
    left, right, bottom, top = image.get_extent()
    # cell (i, j) is centred on row i and step j: rows are unit high from −0.5, columns 100 wide
    assert (left, right, bottom, top) == (-50.0, 350.0, -0.5, len(freqs) - 0.5)
    ticks = {
        round(t): label.get_text() for t, label in zip(ax.get_yticks(), ax.get_yticklabels(), strict=True)
    }
    assert ticks == {i: f"{f:g}" for i, f in enumerate(freqs)}


def test_many_frequencies_get_at_most_a_readable_number_of_labels():
    freqs = np.arange(1.0, 51.0)
    ax = Figure().add_subplot()
    draw_heatmap(ax, np.array([0.0, 10.0]), freqs, np.zeros((50, 2)))
    labels = [label.get_text() for label in ax.get_yticklabels()]
    assert 0 < len(labels) <= MAX_FREQUENCY_TICKS and labels[0] == "1"
