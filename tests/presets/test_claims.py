"""The claims' statistics against hand computations (Spearman's ρ with ties) and their verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gni_engine.presets.claims import _rank_correlation, explicit_vs_gni_claims, spectral_bias_claims
from gni_engine.presets.runner import PresetRun
from gni_engine.spec import parse_run_spec


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


def _run(mode: str, summary: dict, variant: str = "digits") -> PresetRun:
    spec = parse_run_spec({"training": {"mode": mode}})
    return PresetRun(variant, mode, {"training.mode": mode}, spec, "succeeded", summary=summary)


def test_training_on_r_holds_only_when_it_sits_nearer_gni_than_no_noise():
    # The published digits row: R (0.1473) next to the baseline (0.1399), far from GNI (0.1851).
    losses = {"baseline": 0.1399, "gni": 0.1851, "explicit": 0.1473}
    [claim] = explicit_vs_gni_claims([_run(m, {"test_loss": v}) for m, v in losses.items()])
    assert claim.verdict == "does not hold"
    losses["explicit"] = 0.18
    [claim] = explicit_vs_gni_claims([_run(m, {"test_loss": v}) for m, v in losses.items()])
    assert claim.verdict == "holds"


def test_spectral_claims_are_inconclusive_for_networks_that_learned_nothing():
    flat = {str(k): 0.005 for k in (5, 10, 20, 30, 40, 50)}
    runs = [_run(m, {"spectrum_final": flat}, "sinusoids") for m in ("baseline", "gni")]
    verdicts = {c.claim: c.verdict for c in spectral_bias_claims(runs)}
    assert verdicts["With GNIs high frequencies stay near 0"] == "inconclusive"
    assert (
        verdicts["GNIs lower the high-frequency content relative to no noise (same seeds)"] == "inconclusive"
    )


def test_high_frequency_content_is_compared_seed_by_seed():
    # Seed 1's baseline failed: seed 2's GNI run is compared with seed 2's baseline, not seed 1's.
    def spectrum(high: float) -> dict:
        return {"spectrum_final": {"5": 1.0, "30": high, "40": high}}

    runs = [
        _run("baseline", spectrum(0.9), "sinusoids"),
        _run("gni", spectrum(0.1), "sinusoids"),
        _run("gni", spectrum(0.5), "sinusoids"),
        _run("baseline", spectrum(0.6), "sinusoids"),
    ]
    for run, seed in zip(runs, (1, 1, 2, 2), strict=True):
        run.spec = run.spec.model_copy(update={"seed": seed})
    runs[0].status = "failed"
    [claim] = [c for c in spectral_bias_claims(runs) if c.claim.startswith("GNIs lower")]
    assert "lower on 1/1 seeds" in claim.measured and claim.verdict == "holds"
