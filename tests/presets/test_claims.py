"""The claims' statistics against hand computations: Spearman's ρ with ties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gni_engine.presets.claims import _rank_correlation


def _spearman_by_definition(x: list[float], y: list[float]) -> float:
    """Pearson's r of the average ranks, each rank counted from its definition (slow twin)."""

    def ranks(v: list[float]) -> list[float]:
        return [sum(w < a for w in v) + (sum(w == a for w in v) - 1) / 2 for a in v]

    rx, ry = np.array(ranks(x)), np.array(ranks(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx @ ry) / math.sqrt((rx @ rx) * (ry @ ry)))


def test_ties_share_their_average_rank():
    # x = K ascending, y = steps with two ties: by hand, −4 / √20.
    assert _rank_correlation([1, 2, 3, 4], [2, 2, 1, 1]) == pytest.approx(-4 / math.sqrt(20), abs=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = [float(v) for v in rng.integers(0, 4, 9)]
        y = [float(v) for v in rng.integers(0, 3, 9)]
        if len(set(x)) > 1 and len(set(y)) > 1:
            assert _rank_correlation(x, y) == pytest.approx(_spearman_by_definition(x, y), abs=1e-12)


def test_all_frequencies_at_one_step_is_no_evidence():
    # Position must not break ties: ten frequencies reaching 0.5 at the same record give no ρ.
    assert math.isnan(_rank_correlation([5.0 * k for k in range(1, 11)], [300.0] * 10))


def test_a_frequency_never_learned_ranks_last():
    assert _rank_correlation([5, 10, 15, 20], [100, 200, math.inf, math.inf]) == pytest.approx(
        _spearman_by_definition([5, 10, 15, 20], [100, 200, 1e300, 1e300]), abs=1e-12
    )
