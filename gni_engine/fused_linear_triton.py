"""A hidden layer of a stacked MLP as one Triton GEMM: bias, activation and counter noise in its epilogue.

Imported only where Triton is present (and, outside the tests' CPU interpreter, CUDA). For hidden
layer k, run e, the forward kernel computes

    h' = φ(h W + b) + s ε (a + m φ(h W + b)),   φ ∈ {relu, identity},

tile by tile: the product stays in registers, and only h' (and, for ReLU, one byte per value saying
where h W + b > 0) reaches memory. With cuBLAS and the separate fused-activation kernel
(:mod:`gni_engine.counter_activation_triton`) the pre-activation z is written by the GEMM and read
back: two more passes over the layer's largest tensor, and a TF32 GEMM of this shape (K = 256) is
itself bound by memory, not arithmetic.

The backward pass never writes g_z = g (1 + s m ε) φ'(z + b): both of its GEMMs build it tile by tile
as they load it (their prologue), from the incoming gradient g, the saved byte mask and, for
multiplicative noise, ε regenerated from the counters — dh = g_z Wᵀ in one kernel, dW = hᵀ g_z and
the bias gradient Σ_n g_z in the other.

The noise is the noise :func:`gni_engine.counter_noise.inject_reference` defines (value i of run e's
(N, d) block is lane i mod 4 of counter start_e + offset + ⌊i/4⌋), so runs are the same runs as
with the separate kernels, up to the rounding of a different summation order. That needs d to be a
multiple of 4 (a counter's four values in one row): :func:`applies` says when the kernel can be used.

``precision`` picks ``tl.dot``'s arithmetic: ``fp32`` IEEE products (CUDA cores), ``tf32`` one TF32
tensor-core product, ``tf32x3`` three TF32 products of split operands (about fp32's accuracy at
tensor-core speed). Tile shapes are chosen by Triton's autotuner (:data:`TILE_CANDIDATES`, three per
kernel, none spilling registers in TF32 when compiled for sm_90, not yet timed on a card) on the first
call of each layer shape and precision: about 9 compilations each.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl

from gni_engine.counter_noise import FUSED_ACTIVATIONS
from gni_engine.counter_noise_triton import _noise_tile

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DOT_PRECISION = {"fp32": "ieee", "tf32": "tf32", "tf32x3": "tf32x3"}
MAX_VALUES_PER_RUN = 2**31 - 1  # offsets inside one run's block are 32-bit


# ------------------------------------------------------------------------------------- tile helpers
@triton.jit
def _gated_gradient(  # type: ignore[no-untyped-def]
    g_run,
    keep_run,
    mul_ptr,
    keys_ptr,
    starts_ptr,
    e,
    point_offset,
    sign,
    rows,
    col0,
    M: tl.constexpr,
    N: tl.constexpr,
    RELU: tl.constexpr,
    MULT_NOISE: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
):
    """The (BM, BN) tile of g_z = g (1 + s m ε) φ'(z + b), built from g and the saved mask."""
    cols = col0 + tl.arange(0, BN)
    inside = (rows[:, None] < M) & (cols[None, :] < N)
    at = rows[:, None] * N + cols[None, :]
    g = tl.load(g_run + at, mask=inside, other=0.0)
    if MULT_NOISE:
        eps = _noise_tile(keys_ptr, starts_ptr, e, point_offset, rows, col0, N, BM, BN)
        g = g + g * ((tl.load(mul_ptr + e) * sign) * eps)
    if RELU:
        g = tl.where(tl.load(keep_run + at, mask=inside, other=0) != 0, g, 0.0)
    return g


# ------------------------------------------------------------------------------------------ kernels
@triton.jit
def _forward_kernel(  # type: ignore[no-untyped-def]
    h_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    keep_ptr,
    add_ptr,
    mul_ptr,
    keys_ptr,
    starts_ptr,
    point_offset,
    sign,
    M: tl.constexpr,
    N: tl.constexpr,
    K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    NOISE: tl.constexpr,
    PRECISION: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    """out = φ(h W + b) + s ε (a + m φ(h W + b)) for one (BM, BN) tile of run e; keep = (h W + b > 0)."""
    pid = tl.program_id(0)
    e = tl.program_id(1).to(tl.int64)
    tiles_n = tl.cdiv(N, BN)
    rows = (pid // tiles_n) * BM + tl.arange(0, BM)
    col0 = (pid % tiles_n) * BN
    cols = col0 + tl.arange(0, BN)
    ks = tl.arange(0, BK)
    h_run = h_ptr + e * (M * K)
    w_run = w_ptr + e * (K * N)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + ks
        a = tl.load(
            h_run + rows[:, None] * K + kk[None, :], mask=(rows[:, None] < M) & (kk[None, :] < K), other=0.0
        )
        b = tl.load(
            w_run + kk[:, None] * N + cols[None, :], mask=(kk[:, None] < K) & (cols[None, :] < N), other=0.0
        )
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    u = acc
    if HAS_BIAS:
        u = u + tl.load(bias_ptr + e * N + cols, mask=cols < N, other=0.0)[None, :]
    inside = (rows[:, None] < M) & (cols[None, :] < N)
    at = e * (M * N) + rows[:, None] * N + cols[None, :]
    h = u
    if RELU:
        h = tl.where(u < 0, 0.0, u)  # keeps a NaN, so divergence reaches the loss
        tl.store(keep_ptr + at, (u > 0).to(tl.uint8), mask=inside)
    if NOISE:
        eps = _noise_tile(keys_ptr, starts_ptr, e, point_offset, rows, col0, N, BM, BN)
        h = h + eps * (tl.load(add_ptr + e) * sign + (tl.load(mul_ptr + e) * sign) * h)
    tl.store(out_ptr + at, h, mask=inside)


@triton.jit
def _grad_input_kernel(  # type: ignore[no-untyped-def]
    g_ptr,
    keep_ptr,
    w_ptr,
    dh_ptr,
    mul_ptr,
    keys_ptr,
    starts_ptr,
    point_offset,
    sign,
    M: tl.constexpr,
    N: tl.constexpr,
    K: tl.constexpr,
    RELU: tl.constexpr,
    MULT_NOISE: tl.constexpr,
    PRECISION: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    """dh = g_z Wᵀ for one (BM, BK) tile of run e (BN: the step over the layer's outputs)."""
    pid = tl.program_id(0)
    e = tl.program_id(1).to(tl.int64)
    tiles_k = tl.cdiv(K, BK)
    rows = (pid // tiles_k) * BM + tl.arange(0, BM)
    kk = (pid % tiles_k) * BK + tl.arange(0, BK)
    g_run = g_ptr + e * (M * N)
    keep_run = keep_ptr + e * (M * N)
    w_run = w_ptr + e * (K * N)
    acc = tl.zeros((BM, BK), dtype=tl.float32)
    for n0 in range(0, N, BN):
        g = _gated_gradient(
            g_run,
            keep_run,
            mul_ptr,
            keys_ptr,
            starts_ptr,
            e,
            point_offset,
            sign,
            rows,
            n0,
            M,
            N,
            RELU,
            MULT_NOISE,
            BM,
            BN,
        )
        cols = n0 + tl.arange(0, BN)
        w = tl.load(
            w_run + kk[:, None] * N + cols[None, :], mask=(kk[:, None] < K) & (cols[None, :] < N), other=0.0
        )
        acc = tl.dot(g, tl.trans(w), acc, input_precision=PRECISION)
    at = e * (M * K) + rows[:, None] * K + kk[None, :]
    tl.store(dh_ptr + at, acc, mask=(rows[:, None] < M) & (kk[None, :] < K))


@triton.jit
def _grad_weight_kernel(  # type: ignore[no-untyped-def]
    h_ptr,
    g_ptr,
    keep_ptr,
    dw_ptr,
    db_ptr,
    mul_ptr,
    keys_ptr,
    starts_ptr,
    point_offset,
    sign,
    M: tl.constexpr,
    N: tl.constexpr,
    K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    MULT_NOISE: tl.constexpr,
    PRECISION: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    """dW = hᵀ g_z for one (BK, BN) tile of run e (BM: the step over examples); the programs of the
    first row of tiles also write the bias gradient Σ_n g_z."""
    pid = tl.program_id(0)
    e = tl.program_id(1).to(tl.int64)
    tiles_n = tl.cdiv(N, BN)
    pk = pid // tiles_n
    kk = pk * BK + tl.arange(0, BK)
    col0 = (pid % tiles_n) * BN
    cols = col0 + tl.arange(0, BN)
    h_run = h_ptr + e * (M * K)
    g_run = g_ptr + e * (M * N)
    keep_run = keep_ptr + e * (M * N)
    acc = tl.zeros((BK, BN), dtype=tl.float32)
    bias_sum = tl.zeros((BN,), dtype=tl.float32)
    for m0 in range(0, M, BM):
        rows = m0 + tl.arange(0, BM)
        h = tl.load(
            h_run + rows[:, None] * K + kk[None, :], mask=(rows[:, None] < M) & (kk[None, :] < K), other=0.0
        )
        g = _gated_gradient(
            g_run,
            keep_run,
            mul_ptr,
            keys_ptr,
            starts_ptr,
            e,
            point_offset,
            sign,
            rows,
            col0,
            M,
            N,
            RELU,
            MULT_NOISE,
            BM,
            BN,
        )
        acc = tl.dot(tl.trans(h), g, acc, input_precision=PRECISION)
        if HAS_BIAS:
            bias_sum += tl.sum(g, axis=0)
    at = e * (K * N) + kk[:, None] * N + cols[None, :]
    tl.store(dw_ptr + at, acc, mask=(kk[:, None] < K) & (cols[None, :] < N))
    if HAS_BIAS:
        tl.store(db_ptr + e * N + cols, bias_sum, mask=(cols < N) & (pk == 0))


# --------------------------------------------------------------------------------- tile selection
def _config(bm: int, bn: int, bk: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=warps, num_stages=stages)


# (BM, BN, BK) name each kernel's own tile: forward (examples, outputs, inputs); dh (examples, the
# step over outputs, inputs); dW (the step over examples, outputs, inputs). Chosen so that no candidate
# spills registers in TF32 at the reference shape (1,024 × 256 × 256, compiled for sm_90 by
# ``benchmarks/compile_check.py --kernels fused-gemm``) and each kernel has one that does not spill in
# every arithmetic; the first candidates, with 128 × 128 tiles, spilled 256–1,448 bytes a thread in
# every forward variant (the epilogue's normals beside the accumulator).
TILE_CANDIDATES = {
    "_forward_kernel": [_config(128, 64, 32, 8, 3), _config(64, 128, 32, 8, 3), _config(64, 64, 32, 4, 3)],
    "_grad_input_kernel": [
        _config(128, 32, 128, 8, 3),
        _config(64, 32, 128, 4, 3),
        _config(128, 32, 64, 8, 3),
    ],
    "_grad_weight_kernel": [
        _config(32, 128, 128, 8, 3),
        _config(32, 64, 32, 4, 3),
        _config(16, 64, 64, 4, 3),
    ],
}
# the interpreter runs one small tile (several tiles per run and a loop of several steps in the tests)
_INTERPRETED_TILE = {"BM": 16, "BN": 16, "BK": 16}
_KEY = ["M", "N", "K", "PRECISION", "RELU"]


def _tuned(kernel: Any) -> Any:
    if INTERPRETED:
        return kernel
    return triton.autotune(configs=TILE_CANDIDATES[kernel.__name__], key=_KEY)(kernel)


_forward = _tuned(_forward_kernel)
_grad_input = _tuned(_grad_input_kernel)
_grad_weight = _tuned(_grad_weight_kernel)


def _launch(kernel: Any, tiles: Any, e: int, *args: Any, **meta: Any) -> None:
    """Grid (tiles of one run, runs); ``tiles(BM, BN, BK)`` counts a run's tiles for the chosen tile."""
    if INTERPRETED:
        kernel[(tiles(**_INTERPRETED_TILE), e)](*args, **meta, **_INTERPRETED_TILE)
    else:
        kernel[lambda m: (tiles(m["BM"], m["BN"], m["BK"]), e)](*args, **meta)


# ------------------------------------------------------------------------------------------ autograd
class _LinearActivate(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        h: torch.Tensor,
        w: torch.Tensor,
        bias: torch.Tensor | None,
        relu: bool,
        additive: torch.Tensor,
        multiplicative: torch.Tensor,
        keys: torch.Tensor,
        starts: torch.Tensor,
        point_offset: int,
        sign: float,
        noise: bool,
        multiplicative_anywhere: bool,
        precision: str,
    ) -> torch.Tensor:
        h, w = h.contiguous(), w.contiguous()
        bias = bias.contiguous() if bias is not None else None
        e, m, k = h.shape
        n = w.shape[2]
        out = torch.empty(e, m, n, dtype=h.dtype, device=h.device)
        keep = torch.empty(e, m, n, dtype=torch.uint8, device=h.device) if relu else None
        dims = {"M": m, "N": n, "K": k}
        _launch(
            _forward,
            lambda BM, BN, BK: triton.cdiv(m, BM) * triton.cdiv(n, BN),
            e,
            h,
            w,
            bias if bias is not None else out,
            out,
            keep if keep is not None else out,
            additive,
            multiplicative,
            keys,
            starts,
            point_offset,
            sign,
            **dims,
            HAS_BIAS=bias is not None,
            RELU=relu,
            NOISE=noise,
            PRECISION=DOT_PRECISION[precision],
        )
        ctx.save_for_backward(h, w, keep, multiplicative, keys, starts)
        ctx.settings = (
            bias is not None,
            relu,
            point_offset,
            sign,
            noise and multiplicative_anywhere,
            precision,
        )
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, w, keep, multiplicative, keys, starts = ctx.saved_tensors
        has_bias, relu, point_offset, sign, mult_noise, precision = ctx.settings
        grad = grad.contiguous()
        e, m, k = h.shape
        n = w.shape[2]
        dims = {"M": m, "N": n, "K": k}
        common = (multiplicative, keys, starts, point_offset, sign)
        flags = {"RELU": relu, "MULT_NOISE": mult_noise, "PRECISION": DOT_PRECISION[precision]}
        keep_or_grad = keep if keep is not None else grad
        grad_h = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_h = torch.empty_like(h)
            _launch(
                _grad_input,
                lambda BM, BN, BK: triton.cdiv(m, BM) * triton.cdiv(k, BK),
                e,
                grad,
                keep_or_grad,
                w,
                grad_h,
                *common,
                **dims,
                **flags,
            )
        if ctx.needs_input_grad[1] or (has_bias and ctx.needs_input_grad[2]):
            grad_w = torch.empty_like(w)
            grad_b = torch.empty(e, 1, n, dtype=w.dtype, device=w.device) if has_bias else None
            _launch(
                _grad_weight,
                lambda BM, BN, BK: triton.cdiv(k, BK) * triton.cdiv(n, BN),
                e,
                h,
                grad,
                keep_or_grad,
                grad_w,
                grad_b if grad_b is not None else grad_w,
                *common,
                **dims,
                HAS_BIAS=has_bias,
                **flags,
            )
        return grad_h, grad_w, grad_b, None, None, None, None, None, None, None, None, None, None


# ------------------------------------------------------------------------------------------- entry
def applies(h: torch.Tensor, w: torch.Tensor, activation: str) -> bool:
    """Whether the kernel computes this layer: float32, relu or linear, a width that keeps a counter's
    four values in one row, and one run's blocks within 32-bit offsets."""
    m, k, n = int(h.shape[1]), int(w.shape[1]), int(w.shape[2])
    return (
        h.dtype == torch.float32
        and w.dtype == torch.float32
        and activation in FUSED_ACTIVATIONS
        and n % 4 == 0
        and max(m * n, m * k, k * n) <= MAX_VALUES_PER_RUN
    )


def linear_activate_gpu(
    h: torch.Tensor,
    w: torch.Tensor,
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
    precision: str,
) -> torch.Tensor:
    """φ(h W + b) with its noise, in one GEMM (h (E, N, d_in), W (E, d_in, d_out), b (E, 1, d_out))."""
    if not applies(h, w, activation):
        raise ValueError(
            f"the fused GEMM takes float32 relu/linear layers of width divisible by 4, not "
            f"{activation} {tuple(h.shape)} × {tuple(w.shape)} in {h.dtype}"
        )
    if precision not in DOT_PRECISION:
        raise ValueError(f"the fused GEMM computes in {', '.join(DOT_PRECISION)}, not {precision!r}")
    out: torch.Tensor = _LinearActivate.apply(
        h,
        w,
        bias,
        activation == "relu",
        additive,
        multiplicative,
        keys,
        starts,
        point_offset,
        sign,
        noise,
        multiplicative_anywhere,
        precision,
    )
    return out


def compare_linear_with_reference(
    device: str | torch.device = "cuda", *, precision: str = "fp32", every_variant: bool = True
) -> dict[str, float]:
    """Largest differences between the fused GEMM and its definition
    (:func:`gni_engine.counter_noise.compare_layer_with_reference`): output and the gradients of h,
    W and b relative to the reference's largest value, in every variant for a 20-input layer and
    the variants a ReLU network's training compiles for a one-input layer (``every_variant=False``:
    only those). ``nan_kept`` is 1 where a NaN in h did not reach the output."""
    from gni_engine.counter_noise import compare_layer_with_reference

    return compare_layer_with_reference(
        linear_activate_gpu, device, precision=precision, every_variant=every_variant, label="gemm"
    )
