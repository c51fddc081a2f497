"""The run specification: the single source of truth for what one run is.

A :class:`RunSpec` is frozen and forbids unknown fields. Its canonical JSON form (all defaults
filled in, keys sorted, no whitespace) has a stable SHA-256 hash that identifies the run's
settings everywhere: in results, in the database and in the queue.

Noise levels are *standard deviations* σ_k (not variances σ_k²) throughout.

>>> spec = RunSpec.model_validate({"task": "regression", "noise": {"sigma": 0.1}})
>>> spec.injection_sigmas()
(0.1, 0.1, 0.1, 0.1, 0.1, 0.1)
>>> len(spec.spec_hash())
64
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gni_engine.errors import SpecError

Activation = Literal["relu", "elu", "tanh", "gelu", "linear"]
Task = Literal["regression", "classification"]
Mode = Literal["baseline", "gni", "explicit"]
NoiseKind = Literal["additive", "multiplicative"]
Precision = Literal["fp32", "fp64", "tf32", "bf16"]

MAX_SEED = 2**63 - 1
_FIELD_PREFIX = re.compile(r"^([a-z_]+(?:\.[a-z_]+)*): ")


class Frozen(BaseModel):
    """Base of every spec model: immutable, unknown fields rejected, no boolean taken for a number."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # Lax pydantic reads true as 1 (sigma 1.0, width 1, 1 step): refuse it where a number is due.
        items = value if isinstance(value, list | tuple) else (value,)
        if info.field_name is not None and any(isinstance(item, bool) for item in items):
            annotation = cls.model_fields[info.field_name].annotation
            if _mentions(annotation, (int, float)) and not _mentions(annotation, (bool,)):
                raise ValueError("true/false is not a number")
        return value


def _mentions(annotation: Any, types: tuple[type, ...]) -> bool:
    """Whether a field's type names one of ``types`` anywhere in it (``float | tuple[float, ...]``)."""
    if annotation in types:
        return True
    return any(_mentions(arg, types) for arg in typing.get_args(annotation))


# ----------------------------------------------------------------------------------------- data
class _SplitOptions(Frozen):
    test_fraction: float = Field(0.25, ge=0.0, lt=1.0, description="Share of points held out for testing.")
    subset: int | None = Field(None, ge=1, description="Keep at most this many training points.")


class SinusoidsData(Frozen):
    """Mixture of sinusoids (DIGEST §4.1): target Σ_K A_K sin(2π K t + φ_K).

    For ``dim == 1`` the inputs are ``n_points`` evenly spaced t in [0, 1); for ``dim > 1`` they are
    uniform on the unit cube and each component runs along a random unit direction u_K:
    A_K sin(2π K ⟨u_K, t⟩ + φ_K).
    """

    name: Literal["sinusoids"] = "sinusoids"
    n_points: int = Field(200, ge=4, le=1_000_000)
    dim: int = Field(1, ge=1, le=64)
    frequencies: tuple[float, ...] = Field(
        (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0), min_length=1, description="Hz"
    )
    amplitudes: tuple[float, ...] | None = Field(None, description="A_K; default 1 for every frequency.")
    phases: Literal["random", "zero"] | tuple[float, ...] = Field(
        "random", description="'random': φ_K ~ U[0, 2π) drawn from the run's data seed."
    )
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _lengths_match(self) -> SinusoidsData:
        k = len(self.frequencies)
        if any(not math.isfinite(f) or f < 0 for f in self.frequencies):
            raise ValueError("frequencies must be finite and >= 0")
        if self.amplitudes is not None and len(self.amplitudes) != k:
            raise ValueError(f"amplitudes has {len(self.amplitudes)} values for {k} frequencies")
        if self.amplitudes is not None and any(not math.isfinite(a) or a == 0 for a in self.amplitudes):
            raise ValueError("amplitudes must be finite and non-zero (A_K = 0 leaves frequency K out)")
        if isinstance(self.phases, tuple) and len(self.phases) != k:
            raise ValueError(f"phases has {len(self.phases)} values for {k} frequencies")
        if self.dim == 1 and max(self.frequencies) >= self.n_points / 2:
            raise ValueError(
                f"frequency {max(self.frequencies)} Hz is at or above the Nyquist limit "
                f"{self.n_points / 2} Hz of {self.n_points} points"
            )
        return self


class TwoMoonsData(_SplitOptions):
    """Two interleaved half-moons (binary classification) with Gaussian jitter ``noise``."""

    name: Literal["two_moons"] = "two_moons"
    n_points: int = Field(512, ge=4, le=1_000_000)
    noise: float = Field(0.1, ge=0.0, le=10.0)


class CirclesData(_SplitOptions):
    """Two concentric circles (binary classification); ``factor`` is the inner/outer radius ratio."""

    name: Literal["circles"] = "circles"
    n_points: int = Field(512, ge=4, le=1_000_000)
    noise: float = Field(0.05, ge=0.0, le=10.0)
    factor: float = Field(0.5, gt=0.0, lt=1.0)


class DigitsData(_SplitOptions):
    """scikit-learn's 8×8 digits (10 classes), pixels scaled to [0, 1]."""

    name: Literal["digits"] = "digits"


class DiabetesData(_SplitOptions):
    """scikit-learn's diabetes regression set (10 features), inputs and target standardised."""

    name: Literal["diabetes"] = "diabetes"


class BostonData(_SplitOptions):
    """Boston housing prices read from ``housing.csv`` (13 features + MEDV) in the data directory."""

    name: Literal["boston"] = "boston"
    data_dir: str | None = Field(None, description="Defaults to $GNI_DATA_DIR.")


class ImageData(Frozen):
    """MNIST, Fashion-MNIST, CIFAR-10 or SVHN read from their standard files in a data directory.

    Pixels are scaled to [0, 1]; CIFAR-10 and SVHN are dequantised with U(0, 1) noise first
    (``(x + u) / 256``) unless ``dequantise`` is false.
    """

    name: Literal["mnist", "fashion_mnist", "cifar10", "svhn"]
    data_dir: str | None = Field(None, description="Defaults to $GNI_DATA_DIR.")
    subset: int | None = Field(None, ge=1, description="Keep at most this many training images.")
    test_subset: int | None = Field(None, ge=1, description="Keep at most this many test images.")
    dequantise: bool | None = Field(None, description="Default: true for cifar10 and svhn.")
    flatten: bool = Field(True, description="Flatten images to vectors (MLPs); false keeps (C, H, W).")


def _data_name(value: Any) -> str:
    name = value.get("name", "sinusoids") if isinstance(value, dict) else getattr(value, "name", "sinusoids")
    return "image" if name in {"mnist", "fashion_mnist", "cifar10", "svhn"} else str(name)


DataSpec = Annotated[
    Annotated[SinusoidsData, Tag("sinusoids")]
    | Annotated[TwoMoonsData, Tag("two_moons")]
    | Annotated[CirclesData, Tag("circles")]
    | Annotated[DigitsData, Tag("digits")]
    | Annotated[DiabetesData, Tag("diabetes")]
    | Annotated[BostonData, Tag("boston")]
    | Annotated[ImageData, Tag("image")],
    Discriminator(_data_name),
]

CLASSIFICATION_DATA = frozenset(
    {"two_moons", "circles", "digits", "mnist", "fashion_mnist", "cifar10", "svhn"}
)


# ---------------------------------------------------------------------------------------- model
class MLPSpec(Frozen):
    """Fully connected network: input → hidden widths → output, no activation on the output."""

    kind: Literal["mlp"] = "mlp"
    hidden: tuple[Annotated[int, Field(ge=1, le=65_536)], ...] = Field(
        (256, 256, 256, 256, 256), max_length=64, description="Widths of the hidden layers."
    )
    activation: Activation = "relu"
    bias: bool = True
    init: Literal["default", "glorot"] = Field(
        "default",
        description="'default': PyTorch's nn.Linear init; 'glorot': Glorot-uniform weights, zero bias.",
    )

    def injection_points(self) -> int:
        return 1 + len(self.hidden)


class ConvNetSpec(Frozen):
    """The small convnet of DIGEST §4.4: conv c₁ k×k stride s → conv c₂ k×k stride s → dense."""

    kind: Literal["convnet"] = "convnet"
    channels: tuple[Annotated[int, Field(ge=1, le=4096)], Annotated[int, Field(ge=1, le=4096)]] = (32, 128)
    kernel_size: int = Field(4, ge=1, le=16)
    stride: int = Field(2, ge=1, le=8)
    activation: Activation = "elu"
    bias: bool = True
    init: Literal["default", "glorot"] = "default"

    def injection_points(self) -> int:
        return 3


def _model_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "mlp"))
    return str(getattr(value, "kind", "mlp"))


ModelSpec = Annotated[
    Annotated[MLPSpec, Tag("mlp")] | Annotated[ConvNetSpec, Tag("convnet")], Discriminator(_model_kind)
]


# ---------------------------------------------------------------------------------------- noise
class NoiseSpec(Frozen):
    """Gaussian noise on the input (layer 0) and each hidden layer's post-activation output.

    ``sigma`` is the standard deviation: one value for every noisy layer, or one per injection
    point (input first). ``layers`` picks which points get noise: ``"all"``, ``"hidden"`` (not the
    input), ``"input"``, or explicit indices (0 = input, k = k-th hidden layer).
    """

    kind: NoiseKind = "additive"
    sigma: float | tuple[float, ...] = Field(0.1, description="Standard deviation σ_k (not the variance).")
    layers: Literal["all", "hidden", "input"] | tuple[int, ...] = "all"

    @field_validator("sigma")
    @classmethod
    def _sigma_valid(cls, value: float | tuple[float, ...]) -> float | tuple[float, ...]:
        values = value if isinstance(value, tuple) else (value,)
        for s in values:
            if not math.isfinite(s) or s < 0:
                raise ValueError(f"sigma must be finite and >= 0, got {s}")
            if s > 100:
                raise ValueError(f"sigma must be <= 100, got {s}")
        return value

    @field_validator("layers")
    @classmethod
    def _layers_valid(cls, value: Any) -> Any:
        if isinstance(value, tuple):
            if any(i < 0 for i in value):
                raise ValueError("noise layer indices must be >= 0")
            if len(set(value)) != len(value):
                raise ValueError("noise layer indices must be distinct")
        return value


# ------------------------------------------------------------------------------------- training
class TrainingSpec(Frozen):
    """How the run trains.

    Losses: regression uses the squared error ½‖y − f‖² per example, averaged over the batch (so the
    output Hessian is H_L = I); classification uses softmax cross-entropy, averaged over the batch.
    """

    mode: Mode = Field("gni", description="baseline: no noise; gni: noisy forward; explicit: clean loss + R.")
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(3e-4, gt=0.0, le=10.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="SGD momentum (ignored by Adam).")
    batch_size: int | None = Field(None, ge=1, description="None: full batch.")
    steps: int = Field(1000, ge=1, le=10_000_000)
    noise_samples: int = Field(1, ge=1, le=256, description="gni mode: noise draws averaged per step (M).")
    regulariser: Literal["exact", "one_draw"] = Field(
        "exact", description="explicit mode: exact R or its unbiased one-draw estimator."
    )


# ------------------------------------------------------------------------------------- analyses
class AnalysesSpec(Frozen):
    """What is measured during and after training (always on the clean, noise-free network)."""

    record_every: int = Field(100, ge=1, description="Record metrics every this many steps.")
    regulariser: bool = Field(True, description="Record R per layer.")
    noise_gap_samples: int = Field(
        64,
        ge=0,
        le=100_000,
        description="Antithetic pairs for the Monte-Carlo noise gap at the end; 0: skip.",
    )
    noise_gap_every: bool = Field(False, description="Also record the noise gap at every record step.")
    spectrum: bool = Field(True, description="Spectral dynamics (1-D sinusoid regression only).")
    layer_norms: bool = Field(True, description="Layer-to-layer Jacobian norms (MLPs).")
    calibration_bins: int = Field(15, ge=1, le=1000)
    margins: bool = Field(True, description="Output and first-order input margins (classification).")
    high_frequency_cutoff: float | None = Field(
        None, gt=0.0, description="Hz; share of the input-layer R above it (default: half the top frequency)."
    )
    max_eval_points: int = Field(4096, ge=1, description="Cap on the points used by per-example analyses.")


class ExecutionSpec(Frozen):
    """Where and how precisely the run computes."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = Field(
        "fp32", description="fp32 default; fp64 for reference runs; tf32/bf16 opt-in."
    )
    max_batch_runs: int | None = Field(None, ge=1, description="Cap on runs stacked into one batch.")


# ------------------------------------------------------------------------------------------ run
class RunSpec(Frozen):
    """One run: a task, its data, a network, its noise, how it trains, what is measured, a seed."""

    task: Task = "regression"
    data: DataSpec = Field(default_factory=SinusoidsData)
    model: ModelSpec = Field(default_factory=MLPSpec)
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    analyses: AnalysesSpec = Field(default_factory=AnalysesSpec)
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seeds initial weights, noise and data order.")
    data_seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Seeds data and split; default: seed.")

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        is_classification_data = self.data.name in CLASSIFICATION_DATA
        if self.task == "classification" and not is_classification_data:
            raise ValueError(
                f"task: data '{self.data.name}' is a regression data set but task is 'classification'"
            )
        if self.task == "regression" and is_classification_data:
            raise ValueError(
                f"task: data '{self.data.name}' is a classification data set but task is 'regression'"
            )
        if isinstance(self.model, ConvNetSpec) and not (
            isinstance(self.data, ImageData) and not self.data.flatten
        ):
            raise ValueError("model.kind: 'convnet' needs image data with data.flatten=false")
        if isinstance(self.data, ImageData) and not self.data.flatten and isinstance(self.model, MLPSpec):
            raise ValueError("data.flatten: model 'mlp' needs flattened inputs: set data.flatten=true")
        points = self.model.injection_points()
        sigma, layers = self.noise.sigma, self.noise.layers
        if isinstance(sigma, tuple) and len(sigma) != points:
            raise ValueError(
                f"noise.sigma: {len(sigma)} values given but the model has {points} injection points "
                f"(the input and {points - 1} hidden layers)"
            )
        if isinstance(layers, tuple) and layers and max(layers) >= points:
            raise ValueError(
                f"noise.layers: layer {max(layers)} named but the model has injection points 0..{points - 1}"
            )
        return self

    @property
    def loss(self) -> Literal["mse", "cross_entropy"]:
        return "mse" if self.task == "regression" else "cross_entropy"

    @property
    def effective_data_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    def injection_sigmas(self) -> tuple[float, ...]:
        """σ_k for every injection point (input first), 0 where ``noise.layers`` excludes it."""
        points = self.model.injection_points()
        sigma = self.noise.sigma
        values = sigma if isinstance(sigma, tuple) else (sigma,) * points
        layers = self.noise.layers
        if layers == "all":
            chosen = set(range(points))
        elif layers == "hidden":
            chosen = set(range(1, points))
        elif layers == "input":
            chosen = {0}
        else:
            chosen = set(layers)
        return tuple(float(v) if k in chosen else 0.0 for k, v in enumerate(values))

    def canonical_json(self) -> str:
        return canonical_json(self.model_dump(mode="json"))

    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


_UNION_TAGS = frozenset(
    {"mlp", "convnet", "sinusoids", "two_moons", "circles", "digits", "diabetes", "boston", "image"}
)


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, non-finite numbers refused: equal content gives equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def format_validation_error(error: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Pydantic's errors as ``[{"loc": "noise.sigma", "msg": "..."}]`` with dotted field paths."""
    out = []
    for item in error.errors(include_url=False):
        parts = [prefix] if prefix else []
        for p in item["loc"]:
            if p in _UNION_TAGS:  # pydantic puts the chosen union member in the path; users never wrote it
                continue
            if isinstance(p, int) and parts:
                parts[-1] = f"{parts[-1]}[{p}]"
            else:
                parts.append(str(p))
        msg = str(item["msg"]).removeprefix("Value error, ")
        loc = ".".join(parts)
        named = _FIELD_PREFIX.match(msg)
        if named:  # a cross-field check names its field as "path: message"
            loc = ".".join(filter(None, [loc, named.group(1)]))
            msg = msg[named.end() :]
        out.append({"loc": loc or "(root)", "msg": msg})
    return out


def spec_error_from(error: ValidationError, what: str = "run spec", prefix: str = "") -> SpecError:
    details = format_validation_error(error, prefix)
    lines = "; ".join(f"{d['loc']}: {d['msg']}" for d in details)
    return SpecError(f"invalid {what}: {lines}", details=details)


def parse_run_spec(data: Any) -> RunSpec:
    """Validate a mapping into a :class:`RunSpec`, raising :class:`SpecError` naming each bad field."""
    try:
        return RunSpec.model_validate(data)
    except ValidationError as error:
        raise spec_error_from(error) from None
