"""The paper's experiments (DIGEST §4) as sweeps: defaults are the paper's settings.

Each preset has one or more variants (a data set each); :func:`get_preset` returns one variant's
sweep, scaled down by ``steps`` and ``seeds`` when given. Noise levels are standard deviations σ:
where the paper states a variance σ², the sweep holds √σ².

>>> sweep = get_preset("spectral-bias", steps=300, seeds=2)
>>> sweep.size(), sweep.base.training.steps, sweep.base.analyses.record_every
(6, 300, 6)
>>> preset_variants("explicit-vs-gni")
('diabetes', 'digits')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from gni_engine.errors import SpecError
from gni_engine.spec import spec_error_from
from gni_engine.sweep import SweepSpec, set_path

ARMS = ["baseline", "gni", "explicit"]
PAPER_SIGMA_SQUARED = (0.1, 0.25, 1.0, 4.0)

PresetBuilder = Callable[[str, int | None, int | None], SweepSpec]


def _record_every(steps: int, paper_every: int = 100) -> int:
    """The paper's recording interval, or ~50 records over a shorter run."""
    return paper_every if steps >= 50 * paper_every else max(1, steps // 50)


def _sweep(base: dict[str, Any], axes: dict[str, list[Any]]) -> SweepSpec:
    return SweepSpec.model_validate({"base": base, "axes": axes})


def spectral_bias(variant: str, steps: int | None, seeds: int | None) -> SweepSpec:
    """DIGEST §4.1–4.2: 1 → 256 → 4 × 256 → 1 ReLU on 200 grid points, Adam 3e-4 full batch.

    GNI: additive σ = 0.1 after each hidden layer, none on the input; 60,000 steps recorded every 100.
    """
    n_steps = steps or 60_000
    base = {
        "task": "regression",
        "data": {"name": "sinusoids", "n_points": 200, "phases": "random"},
        "model": {"kind": "mlp", "hidden": [256] * 5, "activation": "relu"},
        "noise": {"kind": "additive", "sigma": 0.1, "layers": "hidden"},
        "training": {"optimizer": "adam", "lr": 3e-4, "batch_size": None, "steps": n_steps},
        "analyses": {"record_every": _record_every(n_steps), "noise_gap_samples": 64},
    }
    return _sweep(base, {"training.mode": ARMS, "seed": list(range(seeds or 5))})


def regulariser_validity(variant: str, steps: int | None, seeds: int | None) -> SweepSpec:
    """DIGEST §4.3: R vs the Monte-Carlo gap at initialisation (analysis only: ``steps`` is ignored).

    6 hidden layers of 256 ELU units, σ² ∈ {0.1, 0.25, 1, 4} on every injection point, one minibatch
    of 32 per initialisation, 250 initialisations; one data seed so every network sees the same split.
    """
    data = {"digits": {"name": "digits"}, "diabetes": {"name": "diabetes"}}[variant]
    base = {
        "task": "classification" if variant == "digits" else "regression",
        "data": data,
        "data_seed": 0,
        "model": {"kind": "mlp", "hidden": [256] * 6, "activation": "elu"},
        "noise": {"kind": "additive", "layers": "all"},
        "training": {"mode": "baseline", "batch_size": 32, "steps": 1},
        "analyses": {"noise_gap_samples": 256},
    }
    sigmas = [math.sqrt(v) for v in PAPER_SIGMA_SQUARED]
    return _sweep(base, {"noise.sigma": sigmas, "seed": list(range(seeds or 250))})


def explicit_vs_gni(variant: str, steps: int | None, seeds: int | None) -> SweepSpec:
    """DIGEST §4.4: ELU MLP 2 × 32, σ² = 0.1 on every injection point, plain SGD, 250 epochs.

    diabetes: full batch (250 steps); digits: batch 512 over 1,348 training images, 658 steps = 250
    epochs' worth of examples (the trainer drops each epoch's partial batch, so 3 steps are not an epoch).
    The three arms share a seed, hence their initial weights.
    """
    regression = variant == "diabetes"
    default_steps = 250 if regression else 658
    n_steps = steps or default_steps
    base = {
        "task": "regression" if regression else "classification",
        "data": {"name": variant},
        "data_seed": 0,
        "model": {"kind": "mlp", "hidden": [32, 32], "activation": "elu"},
        "noise": {"kind": "additive", "sigma": math.sqrt(0.1), "layers": "all"},
        "training": {
            "optimizer": "sgd",
            "lr": 0.05 if regression else 0.1,
            "batch_size": None if regression else 512,
            "steps": n_steps,
        },
        "analyses": {"record_every": max(1, n_steps // 50), "noise_gap_samples": 64},
    }
    return _sweep(base, {"training.mode": ARMS, "seed": list(range(seeds or 5))})


def calibration_margins(variant: str, steps: int | None, seeds: int | None) -> SweepSpec:
    """DIGEST §4.5 (protocol not in the paper's code): digits, ReLU MLP 2 × 128, Adam 1e-3, batch 128.

    σ² = 0.1 on every injection point; 3,000 steps (≈ 285 epochs) so that the baseline overfits and
    its over-confidence shows; ECE with 15 bins on the held-out quarter.
    """
    n_steps = steps or 3000
    base = {
        "task": "classification",
        "data": {"name": variant},
        "data_seed": 0,
        "model": {"kind": "mlp", "hidden": [128, 128], "activation": "relu"},
        "noise": {"kind": "additive", "sigma": math.sqrt(0.1), "layers": "all"},
        "training": {"optimizer": "adam", "lr": 1e-3, "batch_size": 128, "steps": n_steps},
        "analyses": {"record_every": max(1, n_steps // 50), "calibration_bins": 15, "noise_gap_samples": 16},
    }
    return _sweep(base, {"training.mode": ARMS, "seed": list(range(seeds or 5))})


PRESETS: dict[str, tuple[tuple[str, ...], PresetBuilder]] = {
    "spectral-bias": (("sinusoids",), spectral_bias),
    "regulariser-validity": (("digits", "diabetes"), regulariser_validity),
    "explicit-vs-gni": (("diabetes", "digits"), explicit_vs_gni),
    "calibration-margins": (("digits",), calibration_margins),
}
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)


def preset_variants(name: str) -> tuple[str, ...]:
    """The variants (data sets) a preset runs, default first."""
    return _lookup(name)[0]


def get_preset(
    name: str,
    *,
    steps: int | None = None,
    seeds: int | None = None,
    variant: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SweepSpec:
    """The sweep of preset ``name`` (its default variant unless ``variant`` is named).

    ``steps`` replaces the training length (recording intervals follow), ``seeds`` the number of
    seeds (initialisations); None keeps the paper's settings. ``overrides`` sets dotted paths of the
    base run (``{"model.hidden": [64, 64]}``) to shrink a preset further. Raises :class:`SpecError`
    for an unknown name or variant, non-positive sizes or an invalid override.
    """
    variants, builder = _lookup(name)
    chosen = variant or variants[0]
    if chosen not in variants:
        raise SpecError(f"preset '{name}' has no variant '{chosen}'; variants: {', '.join(variants)}")
    for label, value in (("steps", steps), ("seeds", seeds)):
        if value is not None and value < 1:
            raise SpecError(f"{label} must be >= 1, got {value}")
    sweep = builder(chosen, steps, seeds)
    if not overrides:
        return sweep
    base = sweep.base.model_dump(mode="json")
    for path, value in overrides.items():
        set_path(base, path, value)
    try:
        return SweepSpec.model_validate({"base": base, "axes": sweep.axes})
    except ValidationError as error:
        raise spec_error_from(error, f"preset '{name}' with overrides") from None


def _lookup(name: str) -> tuple[tuple[str, ...], PresetBuilder]:
    if name not in PRESETS:
        raise SpecError(f"unknown preset '{name}'; presets: {', '.join(PRESET_NAMES)}")
    return PRESETS[name]
