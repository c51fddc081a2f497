"""TypedDicts of the run spec, generated from the server's JSON schema: do not edit.

Regenerate with ``python scripts/generate_sdk_types.py`` after changing ``gni_engine.spec``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NotRequired, Required, TypedDict


class AnalysesSpec(TypedDict, total=False):
    """What is measured during and after training (always on the clean, noise-free network)."""

    record_every: NotRequired[int]
    regulariser: NotRequired[bool]
    noise_gap_samples: NotRequired[int]
    noise_gap_every: NotRequired[bool]
    spectrum: NotRequired[bool]
    layer_norms: NotRequired[bool]
    calibration_bins: NotRequired[int]
    margins: NotRequired[bool]
    high_frequency_cutoff: NotRequired[float | None]
    max_eval_points: NotRequired[int]


class BostonData(TypedDict, total=False):
    """Boston housing prices read from ``housing.csv`` (13 features + MEDV) in the data directory."""

    test_fraction: NotRequired[float]
    subset: NotRequired[int | None]
    name: NotRequired[Literal["boston"]]
    data_dir: NotRequired[str | None]


class CirclesData(TypedDict, total=False):
    """Two concentric circles (binary classification); ``factor`` is the inner/outer radius ratio."""

    test_fraction: NotRequired[float]
    subset: NotRequired[int | None]
    name: NotRequired[Literal["circles"]]
    n_points: NotRequired[int]
    noise: NotRequired[float]
    factor: NotRequired[float]


class ConvNetSpec(TypedDict, total=False):
    """The small convnet of DIGEST §4.4: conv c₁ k×k stride s → conv c₂ k×k stride s → dense."""

    kind: NotRequired[Literal["convnet"]]
    channels: NotRequired[Sequence[int]]
    kernel_size: NotRequired[int]
    stride: NotRequired[int]
    activation: NotRequired[Literal["relu", "elu", "tanh", "gelu", "linear"]]
    bias: NotRequired[bool]
    init: NotRequired[Literal["default", "glorot"]]


class DiabetesData(TypedDict, total=False):
    """scikit-learn's diabetes regression set (10 features), inputs and target standardised."""

    test_fraction: NotRequired[float]
    subset: NotRequired[int | None]
    name: NotRequired[Literal["diabetes"]]


class DigitsData(TypedDict, total=False):
    """scikit-learn's 8×8 digits (10 classes), pixels scaled to [0, 1]."""

    test_fraction: NotRequired[float]
    subset: NotRequired[int | None]
    name: NotRequired[Literal["digits"]]


class ExecutionSpec(TypedDict, total=False):
    """Where and how precisely the run computes."""

    device: NotRequired[Literal["auto", "cpu", "cuda"]]
    precision: NotRequired[Literal["fp32", "fp64", "tf32", "bf16"]]
    max_batch_runs: NotRequired[int | None]


class ImageData(TypedDict, total=False):
    """MNIST, Fashion-MNIST, CIFAR-10 or SVHN read from their standard files in a data directory."""

    name: Required[Literal["mnist", "fashion_mnist", "cifar10", "svhn"]]
    data_dir: NotRequired[str | None]
    subset: NotRequired[int | None]
    test_subset: NotRequired[int | None]
    dequantise: NotRequired[bool | None]
    flatten: NotRequired[bool]


class MLPSpec(TypedDict, total=False):
    """Fully connected network: input → hidden widths → output, no activation on the output."""

    kind: NotRequired[Literal["mlp"]]
    hidden: NotRequired[Sequence[int]]
    activation: NotRequired[Literal["relu", "elu", "tanh", "gelu", "linear"]]
    bias: NotRequired[bool]
    init: NotRequired[Literal["default", "glorot"]]


class NoiseSpec(TypedDict, total=False):
    """Gaussian noise on the input (layer 0) and each hidden layer's post-activation output."""

    kind: NotRequired[Literal["additive", "multiplicative"]]
    sigma: NotRequired[float | Sequence[float]]
    layers: NotRequired[Literal["all", "hidden", "input"] | Sequence[int]]


class RunSpec(TypedDict, total=False):
    """One run: a task, its data, a network, its noise, how it trains, what is measured, a seed."""

    task: NotRequired[Literal["regression", "classification"]]
    data: NotRequired[DataSpec]
    model: NotRequired[ModelSpec]
    noise: NotRequired[NoiseSpec]
    training: NotRequired[TrainingSpec]
    analyses: NotRequired[AnalysesSpec]
    execution: NotRequired[ExecutionSpec]
    seed: NotRequired[int]
    data_seed: NotRequired[int | None]


class SinusoidsData(TypedDict, total=False):
    """Mixture of sinusoids (DIGEST §4.1): target Σ_K A_K sin(2π K t + φ_K)."""

    name: NotRequired[Literal["sinusoids"]]
    n_points: NotRequired[int]
    dim: NotRequired[int]
    frequencies: NotRequired[Sequence[float]]
    amplitudes: NotRequired[Sequence[float] | None]
    phases: NotRequired[Literal["random", "zero"] | Sequence[float]]
    test_fraction: NotRequired[float]


class SweepSpec(TypedDict, total=False):
    """A base run and the axes of a grid over its fields (``{"noise.sigma": [0.0, 0.1]}``)."""

    base: NotRequired[RunSpec]
    axes: NotRequired[Mapping[str, Sequence[Any]]]


class TrainingSpec(TypedDict, total=False):
    """How the run trains."""

    mode: NotRequired[Literal["baseline", "gni", "explicit"]]
    optimizer: NotRequired[Literal["sgd", "adam"]]
    lr: NotRequired[float]
    momentum: NotRequired[float]
    batch_size: NotRequired[int | None]
    steps: NotRequired[int]
    noise_samples: NotRequired[int]
    regulariser: NotRequired[Literal["exact", "one_draw"]]


class TwoMoonsData(TypedDict, total=False):
    """Two interleaved half-moons (binary classification) with Gaussian jitter ``noise``."""

    test_fraction: NotRequired[float]
    subset: NotRequired[int | None]
    name: NotRequired[Literal["two_moons"]]
    n_points: NotRequired[int]
    noise: NotRequired[float]


DataSpec = SinusoidsData | TwoMoonsData | CirclesData | DigitsData | DiabetesData | BostonData | ImageData
ModelSpec = MLPSpec | ConvNetSpec
