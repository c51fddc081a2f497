"""Hidden layers with cuBLAS products and everything else folded into the activation kernels.

Imported only where Triton is present (and, outside the tests' CPU interpreter, CUDA). Opt-in as
``fused_gemm="fold"``. With cuBLAS and the fused activation kernel
(:mod:`gni_engine.counter_activation_triton`), a step still makes passes over the layers' largest
tensors (E × N × d values) that carry no arithmetic worth the traffic:

* a network's **first layer** has one input (the sinusoid regressions): cuBLAS writes z = x w, an
  outer product, and the activation kernel reads it back; in the backward pass the kernel writes
  g_z, then the bias gradient Σ_n g_z and the weight gradient Σ_n x_n g_z read it again. Here the
  forward kernel computes u = fma(x, w, b) itself from x (E, N, 1), and one backward pass reads g,
  recomputes u and sums both gradients without writing g_z: about 8 passes become 2.
* every **hidden layer's bias gradient** Σ_n g_z was a separate reduction over g_z; here the
  backward kernel that writes g_z sums it as it goes (one pass fewer per layer).

The backward kernel works on (rows × columns) tiles, each program summing its rows into one partial
sum per column; a second, small reduction (``sum`` over the programs, in a fixed order) finishes the
gradients, so results do not depend on scheduling. The noise of multiplicative runs is regenerated
tile by tile at the counters the forward kernel used (:func:`gni_engine.counter_noise_triton._noise_tile`;
the width must be a multiple of 4). The definition is the same as the separate kernels' (``bmm``,
then :func:`gni_engine.counter_noise.reference_activator`): runs are the same runs up to the
rounding of another summation order, and equal alone and in a batch.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl

from gni_engine.counter_activation_triton import _ActivateInject, _launch_activate
from gni_engine.counter_noise import FUSED_ACTIVATIONS
from gni_engine.counter_noise_triton import MAX_BLOCKS, _noise_tile

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
TILE_VALUES = 64 if INTERPRETED else 2048  # values a program handles per row chunk
MAX_TILE_COLUMNS = 16 if INTERPRETED else 128  # the interpreter's small tiles leave partial ones
MIN_ROW_PROGRAMS = 2 if INTERPRETED else 8  # programs down a run's rows, where it has enough rows


@triton.jit
def _gradient_tiles_kernel(  # type: ignore[no-untyped-def]
    g_ptr,
    src_ptr,
    w_ptr,
    bias_ptr,
    gz_ptr,
    bias_sum_ptr,
    weight_sum_ptr,
    mul_ptr,
    keys_ptr,
    starts_ptr,
    point_offset,
    sign,
    rows_total,
    row_programs,
    WIDTH: tl.constexpr,
    FROM_INPUT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    MULT_NOISE: tl.constexpr,
    STORE_GZ: tl.constexpr,
    SUM_BIAS: tl.constexpr,
    BR: tl.constexpr,
    BC: tl.constexpr,
    CHUNKS: tl.constexpr,
):
    """g_z = g (1 + s m ε) φ'(u) on CHUNKS × BR rows and BC columns of run e, with u = z + b read
    from ``src`` or, ``FROM_INPUT``, recomputed as fma(x, w, b) from x (E, N, 1). Writes g_z when
    ``STORE_GZ``, and this program's column sums Σ g_z (``SUM_BIAS``) and Σ x g_z (``FROM_INPUT``)
    into row ``program_id(1)`` of the (E, row_programs, WIDTH) partial sums."""
    e = tl.program_id(0).to(tl.int64)
    pr = tl.program_id(1)
    col0 = tl.program_id(2) * BC
    cols = col0 + tl.arange(0, BC)
    col_ok = cols < WIDTH
    if FROM_INPUT:
        w = tl.load(w_ptr + e * WIDTH + cols, mask=col_ok, other=0.0)
    if HAS_BIAS:
        b = tl.load(bias_ptr + e * WIDTH + cols, mask=col_ok, other=0.0)
    run = e * rows_total * WIDTH
    g_sum = tl.zeros((BC,), dtype=g_ptr.dtype.element_ty)
    xg_sum = tl.zeros((BC,), dtype=g_ptr.dtype.element_ty)
    for i in tl.static_range(CHUNKS):
        rows = (pr * CHUNKS + i) * BR + tl.arange(0, BR)
        row_ok = rows < rows_total
        inside = row_ok[:, None] & col_ok[None, :]
        at = run + rows.to(tl.int64)[:, None] * WIDTH + cols[None, :]
        if FROM_INPUT:
            x = tl.load(src_ptr + e * rows_total + rows, mask=row_ok, other=0.0)
            xs = tl.broadcast_to(x[:, None], (BR, BC))
            ws = tl.broadcast_to(w[None, :], (BR, BC))
            if HAS_BIAS:
                u = tl.fma(xs, ws, tl.broadcast_to(b[None, :], (BR, BC)))
            else:
                u = xs * ws
        else:
            u = tl.load(src_ptr + at, mask=inside, other=0.0)
            if HAS_BIAS:
                u = u + b[None, :]
        g = tl.load(g_ptr + at, mask=inside, other=0.0)
        if MULT_NOISE:
            eps = _noise_tile(keys_ptr, starts_ptr, e, point_offset, rows, col0, WIDTH, BR, BC).to(g.dtype)
            g = g + g * ((tl.load(mul_ptr + e) * sign) * eps)
        if RELU:
            g = tl.where(u > 0, g, 0.0)
        if STORE_GZ:
            tl.store(gz_ptr + at, g, mask=inside)
        g_sum += tl.sum(g, axis=0)
        if FROM_INPUT:
            xg_sum += tl.sum(g * xs, axis=0)
    partial = (e * row_programs + pr) * WIDTH + cols
    if SUM_BIAS:
        tl.store(bias_sum_ptr + partial, g_sum, mask=col_ok)
    if FROM_INPUT:
        tl.store(weight_sum_ptr + partial, xg_sum, mask=col_ok)


def tile_shape(rows: int, width: int) -> tuple[int, int, int]:
    """(BR, BC, CHUNKS): rows and columns of a tile, and the row chunks a program sums — up to 8
    (fewer partial sums to finish) while a run keeps ``MIN_ROW_PROGRAMS`` programs down its rows.
    It does not depend on the batch, so a run's sums are the same alone and in any batch."""
    bc = min(triton.next_power_of_2(width), MAX_TILE_COLUMNS)
    br = max(TILE_VALUES // bc, 1)
    chunks = 1
    while chunks < 8 and rows >= br * chunks * 2 * MIN_ROW_PROGRAMS:
        chunks *= 2
    return br, bc, chunks


def _gradient_tiles(
    grad: torch.Tensor,
    src: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    multiplicative: torch.Tensor,
    keys: torch.Tensor,
    starts: torch.Tensor,
    point_offset: int,
    sign: float,
    *,
    relu: bool,
    mult_noise: bool,
    store: bool,
    sum_bias: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(g_z or None, Σ_n g_z (E, 1, d) or None, Σ_n x_n g_z (E, 1, d) or None); ``weight`` given:
    ``src`` is a one-input layer's x (E, N, 1), else z (E, N, d)."""
    grad = grad.contiguous()
    e, rows, width = grad.shape
    br, bc, chunks = tile_shape(rows, width)
    row_programs = triton.cdiv(rows, br * chunks)
    if row_programs > MAX_BLOCKS:
        raise ValueError(
            f"folded activation: {rows} examples per run; the kernel takes at most "
            f"{MAX_BLOCKS * br * chunks} (use smaller batches of examples)"
        )
    grad_z = torch.empty_like(grad) if store else None
    partial = (e, row_programs, width)
    bias_parts = torch.empty(partial, dtype=grad.dtype, device=grad.device) if sum_bias else None
    weight_parts = torch.empty(partial, dtype=grad.dtype, device=grad.device) if weight is not None else None
    _gradient_tiles_kernel[(e, row_programs, triton.cdiv(width, bc))](
        grad,
        src,
        weight if weight is not None else grad,
        bias if bias is not None else grad,
        grad_z if grad_z is not None else grad,
        bias_parts if bias_parts is not None else grad,
        weight_parts if weight_parts is not None else grad,
        multiplicative,
        keys,
        starts,
        point_offset,
        sign,
        rows,
        row_programs,
        WIDTH=width,
        FROM_INPUT=weight is not None,
        HAS_BIAS=bias is not None,
        RELU=relu,
        MULT_NOISE=mult_noise,
        STORE_GZ=store,
        SUM_BIAS=sum_bias,
        BR=br,
        BC=bc,
        CHUNKS=chunks,
    )
    finish = lambda parts: parts.sum(1, keepdim=True) if parts is not None else None  # noqa: E731
    return grad_z, finish(bias_parts), finish(weight_parts)


class _FoldedActivation(_ActivateInject):
    """The fused activation kernel's forward; its backward sums the bias gradient as it writes g_z."""

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, bias, _, multiplicative, keys, starts = ctx.saved_tensors
        relu, point_offset, sign, noise, multiplicative_anywhere = ctx.settings
        mult_noise = noise and multiplicative_anywhere
        if not relu and not mult_noise:  # g_z = g: nothing to fold into
            grad_bias = grad.sum(1, keepdim=True) if bias is not None and ctx.needs_input_grad[1] else None
            return grad, grad_bias, None, None, None, None, None, None, None, None, None
        grad_z, grad_bias, _ = _gradient_tiles(
            grad,
            z,
            None,
            bias,
            multiplicative,
            keys,
            starts,
            point_offset,
            sign,
            relu=relu,
            mult_noise=mult_noise,
            store=True,
            sum_bias=bias is not None and ctx.needs_input_grad[1],
        )
        return grad_z, grad_bias, None, None, None, None, None, None, None, None, None


class _FoldedFirstLayer(torch.autograd.Function):
    """A one-input layer: φ(x w + b) + noise from x (E, N, 1); its backward never writes g_z unless
    x needs a gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
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
    ) -> torch.Tensor:
        x, w = x.contiguous(), w.contiguous()
        bias = bias.contiguous() if bias is not None else None
        out = torch.empty(x.shape[0], x.shape[1], w.shape[2], dtype=x.dtype, device=x.device)
        _launch_activate(
            x,
            bias,
            x,
            out,
            relu,
            additive,
            multiplicative,
            keys,
            starts,
            point_offset,
            sign,
            noise=noise,
            has_multiplicative=multiplicative_anywhere,
            backward=False,
            weight=w,
        )
        ctx.save_for_backward(x, w, bias, multiplicative, keys, starts)
        ctx.settings = (relu, point_offset, sign, noise and multiplicative_anywhere)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w, bias, multiplicative, keys, starts = ctx.saved_tensors
        relu, point_offset, sign, mult_noise = ctx.settings
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        grad_z, grad_bias, grad_w = _gradient_tiles(
            grad,
            x,
            w,
            bias,
            multiplicative,
            keys,
            starts,
            point_offset,
            sign,
            relu=relu,
            mult_noise=mult_noise,
            store=needs_x,
            sum_bias=bias is not None and needs_b,
        )
        grad_x = torch.bmm(grad_z, w.transpose(1, 2)) if grad_z is not None else None
        return grad_x, grad_w if needs_w else None, grad_bias, *([None] * 9)


def applies(h: torch.Tensor, w: torch.Tensor, activation: str) -> bool:
    """Whether the folded kernels compute this layer: float32 or float64, relu or linear, and a width
    that keeps a counter's four values in one row."""
    return (
        h.dtype in (torch.float32, torch.float64)
        and w.dtype == h.dtype
        and activation in FUSED_ACTIVATIONS
        and int(w.shape[2]) % 4 == 0
    )


def folded_activate_gpu(
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
    """φ(h W + b) with its noise (h (E, N, d_in), W (E, d_in, d), b (E, 1, d)): for d_in = 1 in one
    kernel, else a cuBLAS product in the caller's precision context (``precision`` is not used) and
    the folded activation kernel."""
    del precision
    if not applies(h, w, activation):
        raise ValueError(
            f"the folded activation takes float32/float64 relu/linear layers of width divisible by 4, "
            f"not {activation} {tuple(h.shape)} × {tuple(w.shape)} in {h.dtype}"
        )
    settings = (activation == "relu", additive, multiplicative, keys, starts, point_offset, sign)
    flags = (noise, multiplicative_anywhere)
    if int(w.shape[1]) == 1:
        first: torch.Tensor = _FoldedFirstLayer.apply(h, w, bias, *settings, *flags)
        return first
    out: torch.Tensor = _FoldedActivation.apply(torch.bmm(h, w), bias, *settings, *flags)
    return out


def compare_folded_with_reference(
    device: str | torch.device = "cuda", *, every_variant: bool = True
) -> dict[str, float]:
    """Largest differences between the folded kernels and their definition
    (:func:`gni_engine.counter_noise.compare_layer_with_reference`), in float64 and float32, every
    variant for one-input and 20-input layers (``every_variant=False``: the variants a ReLU network's
    training compiles)."""
    from gni_engine.counter_noise import compare_layer_with_reference

    out: dict[str, float] = {}
    for dtype in (torch.float64, torch.float32):
        found = compare_layer_with_reference(
            folded_activate_gpu,
            device,
            every_variant=every_variant,
            every_first_layer=True,
            dtype=dtype,
            label=f"folded_{str(dtype).removeprefix('torch.')}",
        )
        out["nan_kept"] = max(out.get("nan_kept", 0.0), found.pop("nan_kept"))
        out.update(found)
    return out
