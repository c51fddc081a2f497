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
opt-in, folds the layer's matrix product in too). Each is checked against the definition
when first used, and in the tests (``benchmarks/gpu_checks.py`` on a GPU): the normals agree to
float32 rounding of log, cos and sin; a wrong integer word would differ by O(1).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from gni_engine.networks import activation_fn
from gni_engine.noise import NoisePlan
from gni_engine.stacked import Activate, Perturb

log = logging.getLogger(__name__)

MASK32 = 0xFFFFFFFF
ROUND_A, ROUND_B = 0xD2511F53, 0xCD9E8D57  # Philox4x32 multipliers
KEY_A, KEY_B = 0x9E3779B9, 0xBB67AE85  # Weyl key increments (golden ratio, √3 − 1)
ROUNDS = 10
VALUES_PER_COUNTER = 4


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


def box_muller(u1: torch.Tensor, u2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = (2.0 * math.pi) * u2
    return radius * torch.cos(angle), radius * torch.sin(angle)


def split_key(key: int) -> tuple[int, int]:
    return key & MASK32, (key >> 32) & MASK32


def counter_normals(keys: torch.Tensor, starts: torch.Tensor, n: int) -> torch.Tensor:
    """(E, n) float32 standard normals: run e's values from counter ``starts[e]`` on, under ``keys[e]``.

    keys: (E,) int64 (63-bit seeds), starts: (E,) int64 counters. Reference implementation (any device).
    """
    counters = -(-n // VALUES_PER_COUNTER)
    ctr = starts.unsqueeze(1) + torch.arange(counters, device=starts.device)  # (E, C)
    k0 = (keys & MASK32).unsqueeze(1)
    k1 = ((keys >> 32) & MASK32).unsqueeze(1)
    zero = torch.zeros_like(ctr)
    x0, x1, x2, x3 = philox4x32(ctr & MASK32, (ctr >> 32) & MASK32, zero, zero, k0, k1)
    z0, z1 = box_muller(uniform_from_bits(x0), uniform_from_bits(x1))
    z2, z3 = box_muller(uniform_from_bits(x2), uniform_from_bits(x3))
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
    """A hidden layer's matrix product, bias, activation and noise as one kernel
    (:mod:`gni_engine.fused_linear_triton`): ``applies(h, w, activation)`` says whether it computes a
    layer, ``apply`` takes :data:`LinearActivator`'s arguments (the activator's, with h and W in place
    of z, and the run's precision last)."""

    applies: Callable[[torch.Tensor, torch.Tensor, str], bool]
    apply: LinearActivator


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
        from gni_engine.counter_noise_triton import compare_with_reference, inject_gpu

        differences = {
            **compare_with_reference("cuda"),
            **compare_fused_with_reference("cuda", every_variant=False),
        }
        if max(differences.values()) > 1e-5:
            raise RuntimeError(f"kernel and reference disagree: {differences}")
    except Exception as error:  # ImportError, a compiler or driver error, a wrong result
        log.warning("counter-noise GPU kernel unusable (%s); training noise uses per-run generators", error)
        return None
    return CounterKernels(inject_gpu, activate_inject_gpu, "philox-counter/triton")


def fused_linear_kernel(device: torch.device) -> FusedLinear | None:
    """The fused-GEMM kernel for ``device``, or ``None`` where it cannot run there: it needs Triton,
    and CUDA or Triton's CPU interpreter (``TRITON_INTERPRET=1``, the tests). Checked against its
    definition once per process, with a warning on failure."""
    return _probe_fused_linear(device.type)


@functools.cache
def _probe_fused_linear(device_type: str) -> FusedLinear | None:
    try:
        from gni_engine import fused_linear_triton as fused

        if device_type != ("cpu" if fused.INTERPRETED else "cuda"):
            raise RuntimeError(
                f"Triton compiles for CUDA devices (or interprets on the CPU), not {device_type}"
            )
        differences = fused.compare_linear_with_reference(device_type, every_variant=False)
        if max(differences.values()) > 1e-5:
            raise RuntimeError(f"kernel and reference disagree: {differences}")
    except Exception as error:  # ImportError, a compiler or driver error, a wrong result
        log.warning("fused-GEMM kernel unusable on %s (%s)", device_type, error)
        return None
    return FusedLinear(fused.applies, fused.linear_activate_gpu)


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
