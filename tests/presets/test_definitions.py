"""Preset sweeps: the paper's settings by default, scaled by steps and seeds, clear errors."""

from __future__ import annotations

import math

import pytest

from gni_engine.errors import SpecError
from gni_engine.presets import PRESET_NAMES, get_preset, preset_variants
from gni_engine.sweep import expand_sweep


def test_spectral_bias_defaults_are_the_papers_settings():
    sweep = get_preset("spectral-bias")
    base = sweep.base
    assert base.data.n_points == 200 and base.data.frequencies == tuple(float(k) for k in range(5, 55, 5))
    assert base.model.hidden == (256,) * 5 and base.model.activation == "relu"
    assert base.injection_sigmas() == (
        0.0,
        0.1,
        0.1,
        0.1,
        0.1,
        0.1,
    )  # std 0.1 after each hidden layer, no input noise
    assert (base.training.optimizer, base.training.lr, base.training.batch_size) == ("adam", 3e-4, None)
    assert (base.training.steps, base.analyses.record_every) == (60_000, 100)
    assert sweep.axes == {"training.mode": ["baseline", "gni", "explicit"], "seed": [0, 1, 2, 3, 4]}


def test_regulariser_validity_takes_variances_as_standard_deviations():
    sweep = get_preset("regulariser-validity", seeds=2)
    variances = [round(s**2, 12) for s in sweep.axes["noise.sigma"]]
    assert variances == [0.1, 0.25, 1.0, 4.0]
    assert get_preset("regulariser-validity").size() == 4 * 250
    assert sweep.base.training.batch_size == 32 and sweep.base.model.hidden == (256,) * 6


def test_every_preset_and_variant_expands():
    for name in PRESET_NAMES:
        for variant in preset_variants(name):
            runs = expand_sweep(get_preset(name, steps=10, seeds=2, variant=variant))
            assert runs and all(spec.training.steps in {10, 1} for _, spec in runs)


def test_explicit_vs_gni_uses_variance_0_1_and_sgd():
    spec = get_preset("explicit-vs-gni", variant="digits").base
    assert math.isclose(spec.injection_sigmas()[0] ** 2, 0.1)
    assert (spec.training.optimizer, spec.training.batch_size, spec.model.activation) == ("sgd", 512, "elu")


def test_overrides_and_errors():
    assert get_preset("calibration-margins", overrides={"model.hidden": [8]}).base.model.hidden == (8,)
    with pytest.raises(SpecError, match="unknown preset 'nope'"):
        get_preset("nope")
    with pytest.raises(SpecError, match="no variant 'mnist'"):
        get_preset("spectral-bias", variant="mnist")
    with pytest.raises(SpecError, match="steps must be >= 1"):
        get_preset("spectral-bias", steps=0)
    with pytest.raises(SpecError, match="model.hidden"):
        get_preset("spectral-bias", overrides={"model.hidden": "wide"})
