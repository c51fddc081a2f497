"""Each preset end to end at a tiny size: its files, its table, and the effects robust at small scale."""

from __future__ import annotations

import csv
import json
import statistics

from gni_engine.presets import run_preset

SMALL_MLP = {"model.hidden": [48, 48, 48]}


def _results(out):
    return json.loads((out / "results.json").read_text())


def _by_mode(results, variant=None):
    return {
        (r["coords"].get("training.mode"), r["coords"]["seed"]): r["summary"]
        for r in results["runs"]
        if variant is None or r["variant"] == variant
    }


def test_spectral_bias_gni_lowers_high_frequencies(tmp_path):
    out = run_preset(
        "spectral-bias", tmp_path, steps=150, seeds=1, overrides={**SMALL_MLP, "training.lr": 2e-3}
    )
    results = _results(out)
    runs = _by_mode(results)
    high = {
        mode: statistics.mean(v for k, v in runs[(mode, 0)]["spectrum_final"].items() if float(k) >= 30)
        for mode in ("baseline", "gni")
    }
    assert high["gni"] < high["baseline"]
    assert (
        runs[("baseline", 0)]["spectrum_final"]["5"] > runs[("baseline", 0)]["spectrum_final"]["50"]
    )  # low first
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {"run", "variant", "step", "name", "value", "training.mode", "seed"} <= set(rows[0])
    assert any(r["name"] == "amplitude_5Hz" for r in rows) and any(r["name"] == "layer_norm_1" for r in rows)
    for name in ("spectral_dynamics", "layer_norms", "loss_curves", "final_spectrum"):
        assert (out / "figures" / "sinusoids" / f"{name}.png").stat().st_size > 0
        assert (out / "figures" / "sinusoids" / f"{name}.svg").stat().st_size > 0
    assert (out / "sinusoids" / "runs" / "mode-gni_seed-0" / "figures" / "function.png").exists()
    summary = (out / "summary.md").read_text()
    assert "| Claim | Paper | Measured here | Verdict |" in summary and "Fourier reading" in summary
    fourier = [c for c in results["claims"] if c["claim"].startswith("Fourier reading")]
    assert fourier[0]["verdict"] == "holds"


def test_regulariser_validity_r_tracks_the_noise_gap(tmp_path):
    overrides = {"model.hidden": [32] * 6, "analyses.noise_gap_samples": 64}
    out = run_preset("regulariser-validity", tmp_path, seeds=3, overrides=overrides)
    results = _results(out)
    assert len(results["runs"]) == 2 * 4 * 3
    for variant in ("digits", "diabetes"):
        small = [
            r["summary"]
            for r in results["runs"]
            if r["variant"] == variant and abs(r["summary"]["sigma_squared"] - 0.1) < 1e-9
        ]
        ratios = [s["R_total"] / s["noise_gap"] for s in small]
        assert 0.3 < statistics.median(ratios) < 3.0, (variant, ratios)
        assert (out / "figures" / variant / "r_vs_gap.png").exists()
    assert len(results["claims"]) == 2


def test_explicit_vs_gni_arms_start_from_the_same_weights(tmp_path):
    overrides = {"analyses.record_every": 10, "analyses.noise_gap_samples": 4}
    out = run_preset("explicit-vs-gni", tmp_path, steps=20, seeds=1, overrides=overrides)
    with (out / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["step"] == "0" and r["name"] == "train_loss"]
    for variant in ("diabetes", "digits"):
        first = {r["training.mode"]: float(r["value"]) for r in rows if r["variant"] == variant}
        assert len(first) == 3 and len(set(first.values())) == 1
        assert (out / "figures" / variant / "loss_curves.png").exists()
    assert {c["claim"].split("(")[-1] for c in _results(out)["claims"]} == {"diabetes)", "digits)"}


def test_calibration_margins_reports_ece_and_margin_distributions(tmp_path):
    overrides = {"model.hidden": [32, 32], "analyses.record_every": 20, "analyses.noise_gap_samples": 4}
    out = run_preset("calibration-margins", tmp_path, steps=40, seeds=1, overrides=overrides)
    runs = _by_mode(_results(out))
    for mode in ("baseline", "gni", "explicit"):
        s = runs[(mode, 0)]
        assert 0.0 <= s["ece"] <= 1.0 and sum(s["reliability"]["counts"]) == 449  # 1,797 / 4 held out
        assert s["margin_q10"] <= s["margin_q50"] <= s["margin_q90"]
        assert s["input_margin_q10"] <= s["input_margin_q50"] <= s["input_margin_q90"]
    for name in ("reliability", "margins", "loss_curves"):
        assert (out / "figures" / "digits" / f"{name}.png").exists()
