"""Counter-based Gaussian noise: every run's stream is a pure function of its key and a counter.

On a GPU, drawing each run's noise from its own ``torch.Generator`` costs one kernel launch per run
and step (256 runs: 256 launches, about 10% of a stacked step and a third of the host's time). Here
a run's noise is Philox4x32-10 (Salmon et al., 2011; the generator behind ``torch.cuda``'s) keyed by
the run's 64-bit noise seed and indexed by a 64-bit counter, so one kernel draws every run's noise
and adds it in place of the separate draw, scale and add:

.. math::

    \\tilde h = h + s\\,\\varepsilon \\circ (a_e + m_e h), \\qquad
    \\varepsilon_i = \\mathrm{BoxMuller}\\big(\\mathrm{Philox}(\\text{key}_e,\\;
        c_e + \\lfloor i/4 \\rfloor)\\big)_{i \\bmod 4}

with s = ±1 (antithetic replay). A run draws the same numbers alone or in any batch, since nothing in
the formula depends on the other runs. Each forward pass advances run e's counter by the counters
its injection points used (one per four values), on the device, without a host round trip.

:func:`philox4x32` and :func:`inject_reference` are the pure-``torch`` definition (used by the
tests, and wherever no compiled kernel is usable but counter noise is asked for);
:mod:`gni_engine.counter_noise_cpu` is the compiled CPU kernel (the CPU's default for MLPs: a
vectorised draw is about three times cheaper than a ``torch.Generator``'s);
:mod:`gni_engine.counter_noise_triton` is the fused GPU kernel (and
:mod:`gni_engine.counter_activation_triton` the one that also applies a hidden layer's bias and
activation: :func:`reference_activator` is its definition; :mod:`gni_engine.fused_linear_triton`,
opt-in, folds the layer's matrix product in too, and :mod:`gni_engine.folded_activation_triton`,
the default on CUDA where it applies, a one-input first layer, a one-output last layer and the bias
gradients). Each is checked
against the definition
when first used, and in the tests (``benchmarks/gpu_checks.py`` on a GPU): the normals agree to
float32 rounding of log, cos and sin; a wrong integer word would differ by O(1).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from gni_engine.networks import activation_fn
from gni_engine.noise import NoisePlan
from gni_engine.stacked import Activate, Finish, Perturb

log = logging.getLogger(__name__)

MASK32 = 0xFFFFFFFF
ROUND_A, ROUND_B = 0xD2511F53, 0xCD9E8D57  # Philox4x32 multipliers
KEY_A, KEY_B = 0x9E3779B9, 0xBB67AE85  # Weyl key increments (golden ratio, √3 − 1)
ROUNDS = 10
VALUES_PER_COUNTER = 4
NOISE_TRIG_CHOICES = ("libdevice", "shared")


def noise_trig() -> str:
    """How the GPU kernels compute Box–Muller's cosine and sine (``GNI_NOISE_TRIG``; default
    ``shared``: one angle reduction for both, the reference TF32 sweep 1.06× faster on an H100 than
    with ``libdevice``'s two (docs/performance.md); see :mod:`gni_engine.counter_noise_triton`).
    A value not among the choices is an error naming it."""
    value = os.environ.get("GNI_NOISE_TRIG", "shared")
    if value not in NOISE_TRIG_CHOICES:
        raise ValueError(
            f"GNI_NOISE_TRIG: expected one of {', '.join(map(repr, NOISE_TRIG_CHOICES))}, got {value!r}"
        )
    return value


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of a · b for 32-bit values held in int64 (the product wraps; masks fix it)."""
    product = b * a
    return (product >> 32) & MASK32, product & MASK32


def philox4x32(
    c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 on int64 tensors holding unsigned 32-bit values (broadcasting)."""
    for r in range(ROUNDS):
        if r > 0:
            k0 = (k0 + KEY_A) & MASK32
            k1 = (k1 + KEY_B) & MASK32
        hi0, lo0 = _mulhilo(ROUND_A, c0)
        hi1, lo1 = _mulhilo(ROUND_B, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def uniform_from_bits(bits: torch.Tensor) -> torch.Tensor:
    """(0, 1] float32 from the top 24 bits: exact in float32, never 0 (Box–Muller takes its log).

    The smallest uniform, 2⁻²⁴, bounds the normals at √(2 · 24 ln 2) ≈ 5.77 σ: a tail of
    probability 8e-9 is never drawn.
    """
    return ((bits >> 8) + 1).to(torch.float32) * (2.0**-24)


def box_muller(
    u1: torch.Tensor, u2: torch.Tensor, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two normals from two float32 uniforms; ``dtype=torch.float64`` evaluates the same formula
    (the angle still rounded to float32, as every kernel computes it) in float64: the twin the
    compiled kernels are checked against, free of float32 library rounding."""
    angle = ((2.0 * math.pi) * u2).to(dtype)
    radius = torch.sqrt(-2.0 * torch.log(u1.to(dtype)))
    return radius * torch.cos(angle), radius * torch.sin(angle)


def split_key(key: int) -> tuple[int, int]:
    return key & MASK32, (key >> 32) & MASK32


def counter_normals(
    keys: torch.Tensor, starts: torch.Tensor, n: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(E, n) float32 standard normals: run e's values from counter ``starts[e]`` on, under ``keys[e]``.

    keys: (E,) int64 (63-bit seeds), starts: (E,) int64 counters. Reference implementation (any
    device); ``dtype=torch.float64``: Box–Muller evaluated in float64 (:func:`box_muller`).
    """
    counters = -(-n // VALUES_PER_COUNTER)
    ctr = starts.unsqueeze(1) + torch.arange(counters, device=starts.device)  # (E, C)
    k0 = (keys & MASK32).unsqueeze(1)
    k1 = ((keys >> 32) & MASK32).unsqueeze(1)
    zero = torch.zeros_like(ctr)
    x0, x1, x2, x3 = philox4x32(ctr & MASK32, (ctr >> 32) & MASK32, zero, zero, k0, k1)
    z0, z1 = box_muller(uniform_from_bits(x0), uniform_from_bits(x1), dtype)
    z2, z3 = box_muller(uniform_from_bits(x2), uniform_from_bits(x3), dtype)
    return torch.stack([z0, z1, z2, z3], dim=2).reshape(len(keys), -1)[:, :n]


def counters_for(values: int) -> int:
    """Counters one draw of ``values`` numbers uses (each counter gives four)."""
    return -(-values // VALUES_PER_COUNTER)


def inject_reference(
    h: torch.Tensor,
    additive: torch.Tensor,
    multiplicative: torch.Tensor,
    keys: torch.Tensor,
    starts: torch.Tensor,
    sign: float = 1.0,
) -> torch.Tensor:
    """h + s ε (a + m h) for h (E, …), a and m (E,), ε from :func:`counter_normals` (differentiable in h)."""
    e = h.shape[0]
    eps = counter_normals(keys, starts, h[0].numel()).to(h.dtype).reshape(h.shape)
    view = (e,) + (1,) * (h.dim() - 1)
    a = additive.reshape(view).to(h.dtype) * sign
    m = multiplicative.reshape(view).to(h.dtype) * sign
    return h + eps * (a + m * h)


class CounterStreams:
    """Per-run keys and counters of a batch, the counters kept on the device.

    ``point_counters`` gives each injection point's share of one forward pass (a count of counters);
    point k of the current pass starts at ``base + sum(point_counters[:k])``. :meth:`advance` moves
    every run past the pass (an in-place add: no host round trip).
    """

    def __init__(self, keys: Sequence[int], device: torch.device) -> None:
        self.keys = torch.tensor(list(keys), dtype=torch.int64, device=device)
        self.base = torch.zeros(len(keys), dtype=torch.int64, device=device)

    def advance(self, counters: int) -> None:
        self.base += counters

    def state(self, e: int) -> int:
        """Run e's counter (for checkpoints; reads the device)."""
        return int(self.base[e])

    def load(self, counters: Sequence[int]) -> None:
        self.base.copy_(torch.tensor(list(counters), dtype=torch.int64))


Injector = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, float, bool], torch.Tensor
]


def reference_injector(
    h: torch.Tensor,
    additive: torch.Tensor,
    multiplicative: torch.Tensor,
    keys: torch.Tensor,
    starts: torch.Tensor,
    point_offset: int,
    sign: float,
    multiplicative_anywhere: bool,
) -> torch.Tensor:
    """:func:`inject_reference` in the injector signature (any device; autograd does the backward)."""
    del multiplicative_anywhere
    return inject_reference(h, additive, multiplicative, keys, starts + point_offset, sign)


Activator = Callable[
    [
        torch.Tensor,
        torch.Tensor | None,
        str,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        int,
        float,
        bool,
        bool,
    ],
    torch.Tensor,
]

FUSED_ACTIVATIONS = ("relu", "linear")  # what the fused activation-and-noise kernel computes


def reference_activator(
    z: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str,
    additive: torch.Tensor,
    multiplicative: torch.Tensor,
    keys: torch.Tensor,
    starts: torch.Tensor,
    point_offset: int,
    sign: float,
    noise: bool,
    multiplicative_anywhere: bool,
) -> torch.Tensor:
    """φ(z + b), then its noise (when ``noise``): the definition of the fused kernel, in plain torch."""
    del multiplicative_anywhere
    h = activation_fn(activation)(z + bias if bias is not None else z)
    if not noise:
        return h
    return inject_reference(h, additive, multiplicative, keys, starts + point_offset, sign)


@dataclass(frozen=True)
class CounterKernels:
    """How counter noise is applied: to a value (``inject``) or fused with bias and activation
    (``activate``, for the hidden layers of MLPs), and the name results record."""

    inject: Injector
    activate: Activator
    label: str


REFERENCE_KERNELS = CounterKernels(reference_injector, reference_activator, "philox-counter")

LinearActivator = Callable[
    [
        torch.Tensor,
        torch.Tensor,
        torch.Tensor | None,
        str,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        int,
        float,
        bool,
        bool,
        str,
    ],
    torch.Tensor,
]


@dataclass(frozen=True)
class FusedLinear:
    """A hidden layer's matrix product, bias, activation and noise computed together: one GEMM
    (:mod:`gni_engine.fused_linear_triton`, ``fused-gemm``) or cuBLAS and the folded activation
    kernels (:mod:`gni_engine.folded_activation_triton`, ``gemm+folded-activation``).
    ``applies(h, w, activation)`` says whether it computes a layer, ``apply`` takes
    :data:`LinearActivator`'s arguments (the activator's, with h and W in place of z, and the run's
    precision last); ``label`` is what results record."""

    applies: Callable[[torch.Tensor, torch.Tensor, str], bool]
    apply: LinearActivator
    label: str = "fused-gemm"
    # the last hidden layer with a one-output layer after it (the folded kernels), or None where it
    # does not apply: :data:`LinearActivator`'s arguments with W_out, b_out after the activation,
    # and no precision
    finish: Callable[..., torch.Tensor | None] | None = None


def gpu_kernels() -> CounterKernels | None:
    """The fused Triton kernels, or ``None`` where CUDA or a working Triton is missing.

    Triton compiles its launcher with the machine's C compiler on first use; where that fails (a
    slim image without one, a read-only cache folder) the kernels are unusable, and training keeps
    the per-run generators rather than failing mid-batch. Probed once per process, with a warning.
    """
    if not torch.cuda.is_available():
        return None
    return _probe_triton()


def cpu_kernels() -> CounterKernels | None:
    """The compiled CPU kernel (:mod:`gni_engine.counter_noise_cpu`), or ``None`` where it cannot be
    built (no C compiler) or disagrees with the definition. Like the GPU's, it applies a hidden
    layer's bias, ReLU and noise in one pass after the matrix product. Probed once per process, with
    a warning on failure."""
    return _probe_cpu()


@functools.cache
def _probe_cpu() -> CounterKernels | None:
    try:
        from gni_engine.counter_noise_cpu import activate_cpu, compare_with_reference, inject_cpu

        differences = compare_with_reference()
        if max(differences.values()) > 1e-5:
            raise RuntimeError(f"kernel and reference disagree: {differences}")
    except Exception as error:  # a missing or failing compiler, a read-only cache, a wrong result
        log.warning("counter-noise CPU kernel unusable (%s); training noise uses per-run generators", error)
        return None
    return CounterKernels(inject_cpu, activate_cpu, "philox-counter/cpu")


@functools.cache
def _probe_triton() -> CounterKernels | None:
    try:
        from gni_engine.counter_activation_triton import activate_inject_gpu, compare_fused_with_reference
        from gni_engine.counter_noise_triton import STREAM_LABEL, compare_with_reference, inject_gpu

        differences = {
            **compare_with_reference("cuda"),
            **compare_fused_with_reference("cuda", every_variant=False),
        }
        if max(differences.values()) > 1e-5:
            raise RuntimeError(f"kernel and reference disagree: {differences}")
    except Exception as error:  # ImportError, a compiler or driver error, a wrong result
        log.warning("counter-noise GPU kernel unusable (%s); training noise uses per-run generators", error)
        return None
    return CounterKernels(inject_gpu, activate_inject_gpu, STREAM_LABEL)


def fused_linear_kernel(device: torch.device) -> FusedLinear | None:
    """The fused-GEMM kernel for ``device``, or ``None`` where it cannot run there: it needs Triton,
    and CUDA or Triton's CPU interpreter (``TRITON_INTERPRET=1``, the tests). Checked against its
    definition once per process, with a warning on failure."""
    return _probe_layer_kernel("fused-gemm", device.type)


def folded_kernel(device: torch.device) -> FusedLinear | None:
    """cuBLAS products with the folded activation kernels for ``device``, or ``None`` where they
    cannot run there (as :func:`fused_linear_kernel`)."""
    return _probe_layer_kernel("gemm+folded-activation", device.type)


@functools.cache
def _probe_layer_kernel(label: str, device_type: str) -> FusedLinear | None:
    try:
        module = _layer_module(label)
        if device_type != ("cpu" if module.INTERPRETED else "cuda"):
            raise RuntimeError(
                f"Triton compiles for CUDA devices (or interprets on the CPU), not {device_type}"
            )
        differences = module.compare(device_type, every_variant=False)
        if max(differences.values()) > 1e-5:
            raise RuntimeError(f"kernel and reference disagree: {differences}")
    except Exception as error:  # ImportError, a compiler or driver error, a wrong result
        log.warning("%s kernel unusable on %s (%s)", label, device_type, error)
        return None
    return FusedLinear(module.applies, module.layer, label, module.finish)


@dataclass(frozen=True)
class _LayerModule:
    applies: Callable[[torch.Tensor, torch.Tensor, str], bool]
    layer: LinearActivator
    compare: Callable[..., dict[str, float]]
    INTERPRETED: bool
    finish: Callable[..., torch.Tensor | None] | None = None


def _layer_module(label: str) -> _LayerModule:
    """The Triton module behind a whole-layer kernel (imports Triton)."""
    if label == "fused-gemm":
        from gni_engine import fused_linear_triton as fused

        return _LayerModule(
            fused.applies, fused.linear_activate_gpu, fused.compare_linear_with_reference, fused.INTERPRETED
        )
    from gni_engine import folded_activation_triton as folded
    from gni_engine.folded_check_triton import compare_fold_with_reference

    return _LayerModule(
        folded.applies,
        folded.folded_activate_gpu,
        compare_fold_with_reference,
        folded.INTERPRETED,
        folded.folded_last_gpu,
    )


class CounterNoiseSampler:
    """The noise of one forward pass from counter streams: same interface as ``NoiseSampler``.

    Building it reserves the pass's counters (every point, active or not, so that a run's stream
    does not depend on its batch) and advances the streams past them.
    """

    def __init__(
        self,
        plan: NoisePlan,
        streams: CounterStreams,
        n_examples: int,
        kernels: CounterKernels,
        *,
        linear: FusedLinear | None = None,
        precision: str = "fp32",
    ) -> None:
        """``linear``: the fused-GEMM kernel, for the hidden layers it applies to (the others take a
        matrix product and ``kernels.activate``); ``precision``: the arithmetic of the fused GEMM's
        products (the run's precision, or ``tf32x3`` for an fp32 run)."""
        if plan.point_sizes is None:
            raise ValueError("counter noise needs the injection points' sizes (MLPs)")
        self.plan = plan
        self.keys = streams.keys
        self.kernels = kernels
        self.linear = linear
        self.precision = precision
        self.offsets: list[int] = []
        total = 0
        for size in plan.point_sizes:
            self.offsets.append(total)
            total += counters_for(n_examples * size)
        self.starts = streams.base.clone()
        streams.advance(total)

    def perturb(self, sign: float = 1.0) -> Perturb:
        plan = self.plan

        def apply(k: int, h: torch.Tensor) -> torch.Tensor:
            if not plan.point_active[k]:
                return h
            additive, multiplicative = plan.columns(k)
            return self.kernels.inject(
                h,
                additive,
                multiplicative,
                self.keys,
                self.starts,
                self.offsets[k],
                sign,
                plan.has_multiplicative[k],
            )

        return apply

    def activate(self, sign: float = 1.0) -> Activate:
        """Layer k's product, bias, activation and point k's noise (``StackedMLP.forward``'s ``activate``):
        one kernel with the fused GEMM, else a matrix product and one kernel."""
        plan, linear = self.plan, self.linear

        def apply(
            k: int, h: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, activation: str
        ) -> torch.Tensor:
            additive, multiplicative = plan.columns(k)
            noise = (additive, multiplicative, self.keys, self.starts, self.offsets[k], sign)
            flags = (plan.point_active[k], plan.has_multiplicative[k])
            if linear is not None and linear.applies(h, w, activation):
                return linear.apply(h, w, bias, activation, *noise, *flags, self.precision)
            return self.kernels.activate(torch.bmm(h, w), bias, activation, *noise, *flags)

        return apply

    def finish(self, sign: float = 1.0) -> Finish | None:
        """The last hidden layer (point k's noise) and the output layer in one go, where the layer
        kernel offers that (``StackedMLP.forward``'s ``finish``); ``None`` where it does not."""
        plan, linear = self.plan, self.linear
        if linear is None or linear.finish is None:
            return None
        last_layer = linear.finish

        def apply(
            k: int,
            h: torch.Tensor,
            w: torch.Tensor,
            bias: torch.Tensor | None,
            activation: str,
            w_out: torch.Tensor,
            b_out: torch.Tensor | None,
        ) -> torch.Tensor | None:
            additive, multiplicative = plan.columns(k)
            noise = (additive, multiplicative, self.keys, self.starts, self.offsets[k], sign)
            flags = (plan.point_active[k], plan.has_multiplicative[k])
            return last_layer(h, w, bias, activation, w_out, b_out, *noise, *flags)

        return apply


# ------------------------------------------------------------------- what the kernel checks use
TRAINED_VARIANTS = [(True, "relu", True, True), (True, "relu", True, False)]  # what ReLU training compiles
EVERY_VARIANT = [  # (bias, activation, noise, multiplicative)
    (b, act, noise, mult)
    for b in (True, False)
    for act in ("relu", "linear")
    for noise in (True, False)
    for mult in (True, False)
]


def check_streams() -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and counters of three runs for the kernel checks: a key above 2⁶², counters crossing 2³²
    and 2⁴⁰."""
    keys = torch.tensor([3, 2**62 + 1, 12345], dtype=torch.int64)
    return keys, torch.tensor([0, 2**32 - 7, 2**40 + 3], dtype=torch.int64)


def check_noise(
    multiplicative: bool, noise: bool
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, float, bool, bool]]:
    """Additive and multiplicative σ of the three check runs (float64) and the activator's last four
    settings (point offset 11, sign −1 with multiplicative noise: the antithetic replay)."""
    a = torch.tensor([0.1, 0.0, 0.2], dtype=torch.float64)
    m = torch.tensor([0.0, 0.3, 0.2] if multiplicative else [0.0, 0.0, 0.0], dtype=torch.float64)
    return a, m, (11, -1.0 if multiplicative else 1.0, noise, multiplicative)


def compare_layer_with_reference(
    layer: LinearActivator,
    device: str | torch.device,
    *,
    precision: str = "fp32",
    every_variant: bool = True,
    every_first_layer: bool = False,
    dtype: torch.dtype = torch.float32,
    label: str = "layer",
) -> dict[str, float]:
    """Largest differences between a whole-layer kernel (:data:`LinearActivator`: the fused GEMM,
    the folded activation) and its definition — ``bmm``, then :func:`reference_activator`, in
    float64 on the CPU: the output and the gradients of h, W and b, relative to the reference's
    largest value, computed in ``dtype`` on ``device``. Shapes leave partial tiles (37 examples, 24
    outputs). A layer of 20 inputs is checked in every variant (bias or not, relu or linear, noise
    or not, multiplicative or not); a layer of one input (a network's first) in the variants a ReLU
    network's training compiles, or in every variant with ``every_first_layer``;
    ``every_variant=False`` checks only the trained variants. ``nan_kept`` is 1 where a NaN in h did
    not reach the output (of a one-input or a four-input layer)."""
    keys, starts = check_streams()
    generator = torch.Generator().manual_seed(2)
    out: dict[str, float] = {}
    for d_in in (1, 20):
        every = every_variant and (d_in > 1 or every_first_layer)
        variants = EVERY_VARIANT if every else TRAINED_VARIANTS
        h = torch.randn(3, 37, d_in, dtype=torch.float64, generator=generator)
        w = torch.randn(3, d_in, 24, dtype=torch.float64, generator=generator) / d_in**0.5
        bias = torch.randn(3, 1, 24, dtype=torch.float64, generator=generator)
        g = torch.randn(3, 37, 24, dtype=torch.float64, generator=generator)
        for has_bias, activation, noise, multiplicative in variants:
            a, m, settings = check_noise(multiplicative, noise)
            leaves = [h.clone().requires_grad_(True), w.clone().requires_grad_(True)]
            if has_bias:
                leaves.append(bias.clone().requires_grad_(True))
            ref = reference_activator(
                torch.bmm(leaves[0], leaves[1]),
                leaves[2] if has_bias else None,
                activation,
                a,
                m,
                keys,
                starts,
                *settings,
            )
            ref_grads = torch.autograd.grad(ref, leaves, g)
            mine = [t.detach().to(device=device, dtype=dtype).requires_grad_(True) for t in leaves]
            got = layer(
                mine[0],
                mine[1],
                mine[2] if has_bias else None,
                activation,
                a.to(device, dtype),
                m.to(device, dtype),
                keys.to(device),
                starts.to(device),
                *settings,
                precision,
            )
            got_grads = torch.autograd.grad(got, mine, g.to(device, dtype))
            name = (
                f"{label}_k{d_in}_{activation}{'_bias' if has_bias else ''}{'_noise' if noise else ''}"
                f"{'_mult' if multiplicative else ''}"
            )
            for part, theirs, mine_value in zip(
                ("out", "grad_h", "grad_w", "grad_b"), (ref, *ref_grads), (got, *got_grads), strict=False
            ):
                scale = float(theirs.detach().abs().max()) or 1.0
                out[f"{name}_{part}"] = (
                    float((mine_value.detach().cpu().double() - theirs.detach()).abs().max()) / scale
                )
    zero = torch.zeros(1, device=device, dtype=dtype)
    nan_lost = 0.0
    for d_in in (1, 4):
        nan_h = torch.zeros(1, 2, d_in, device=device, dtype=dtype)
        nan_h[0, 1, d_in - 1] = float("nan")
        ones = torch.ones(1, d_in, 4, device=device, dtype=dtype)
        kept = layer(
            nan_h, ones, None, "relu", zero, zero, keys[:1].to(device), starts[:1].to(device),
            0, 1.0, False, False, precision,
        )  # fmt: skip
        nan_lost = max(nan_lost, 0.0 if bool(torch.isnan(kept[0, 1]).all()) else 1.0)
    out["nan_kept"] = nan_lost
    return out
