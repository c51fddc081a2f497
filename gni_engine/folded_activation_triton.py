"""Hidden layers with cuBLAS products and everything else folded into the activation kernels.

Imported only where Triton is present (and, outside the tests' CPU interpreter, CUDA). The default
on CUDA where it applies (``fused_gemm="auto"``; ``"fold"`` asks for it, ``"off"`` declines it);
measured 1.17× faster in TF32 and 1.08× in fp32 than what it replaces on an H200
(docs/performance.md). With cuBLAS and the fused activation kernel
(:mod:`gni_engine.counter_activation_triton`), a step still makes passes over the layers' largest
tensors (E × N × d values) that carry no arithmetic worth the traffic:

* a network's **first layer** has one input (the sinusoid regressions): cuBLAS writes z = x w, an
  outer product, and the activation kernel reads it back; in the backward pass the kernel writes
  g_z, then the bias gradient Σ_n g_z and the weight gradient Σ_n x_n g_z read it again. Here the
  forward kernel computes u = fma(x, w, b) itself from x (E, N, 1), and one backward pass reads g,
  recomputes u and sums both gradients without writing g_z: about 8 passes become 2.
* every **hidden layer's bias gradient** Σ_n g_z was a separate reduction over g_z; here the
  backward kernel that writes g_z sums it as it goes (one pass fewer per layer).
* a network's **output layer** has one output (the same regressions): the last hidden value h was
  written, read by the output product, read again for the output weight's gradient, and the
  gradient g_out w_outᵀ was written and read back. Here one forward kernel sums each row of h into
  the output (whole rows per tile, width ≤ 1024) and writes only the output; the backward kernel
  forms g_out w_outᵀ in registers and recomputes h (ε regenerated from the counters) for
  Σ_n h_n g_out,n: h is never stored (:class:`_FoldedLastLayer`, reached through
  ``StackedMLP.forward``'s ``finish``).

The backward kernel works on (rows × columns) tiles, each program accumulating a few tiles down
the rows in a loop and summing them into one partial sum per column (:class:`TileConfig`); a
second, small reduction (``sum`` over the programs, in a fixed order) finishes the gradients, so
results do not depend on scheduling. Noise the backward needs (multiplicative runs,
the output layer's recomputed h) is regenerated tile by tile at the counters the forward kernel used
(:func:`gni_engine.counter_noise_triton._noise_tile`; the width must be a multiple of 4). The
definition is the same as the separate kernels' (``bmm``, then
:func:`gni_engine.counter_noise.reference_activator`): runs are the same runs up to the rounding of
another summation order, and equal alone and in a batch.

This module holds the tile sizes, the launches and the autograd functions; the Triton code is in
:mod:`gni_engine.folded_kernels_triton`, the comparison with the definition (the start-up
probe's and the card check's) in :mod:`gni_engine.folded_check_triton`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import triton

from gni_engine.counter_activation_triton import _ActivateInject, _launch_activate
from gni_engine.counter_noise import FUSED_ACTIVATIONS
from gni_engine.counter_noise_triton import MAX_BLOCKS
from gni_engine.folded_kernels_triton import _gradient_tiles_kernel, _last_layer_forward_kernel

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
TILE_VALUES = 64 if INTERPRETED else 2048  # values a program handles per row chunk
MAX_TILE_COLUMNS = 16 if INTERPRETED else 128  # the interpreter's small tiles leave partial ones
MIN_ROW_PROGRAMS = 2 if INTERPRETED else 8  # programs down a run's rows, where it has enough rows
MAX_LAST_WIDTH = 1024  # the folded output layer holds whole rows of the last hidden layer in a tile


@dataclass(frozen=True)
class TileConfig:
    """How the backward kernel walks a run's rows. Nothing here depends on the batch, so a run's
    sums are the same alone and in any batch; another configuration sums in another order (the
    same values up to rounding). ``tile_values``: values per (rows × columns) tile; ``max_chunks``:
    tiles a program sums down the rows (fewer partial sums to finish); ``num_warps``: warps per
    program; ``rolled``: the chunks are a loop, not unrolled; ``sum_at_end``: whole tiles are
    accumulated and summed down once per program.

    The defaults are the fastest of eight configurations timed on an H200 at the reference sweep's
    size (``benchmarks/fold_tiles.py``, docs/performance.md): the unrolled loop that summed each
    chunk took 4.56 ms for the output layer's backward and 0.81 ms for the first layer's; rolled,
    summing at the end, 0.95 and 0.38 (hidden layers 0.85 either way)."""

    tile_values: int = TILE_VALUES
    max_chunks: int = 8
    num_warps: int = 4
    rolled: bool = True
    sum_at_end: bool = True


TILES = TileConfig()


def tile_shape(rows: int, width: int, config: TileConfig = TILES) -> tuple[int, int, int]:
    """(BR, BC, CHUNKS): rows and columns of a tile, and the row chunks a program sums — up to
    ``config.max_chunks`` while a run keeps ``MIN_ROW_PROGRAMS`` programs down its rows."""
    bc = min(triton.next_power_of_2(width), MAX_TILE_COLUMNS)
    br = max(config.tile_values // bc, 1)
    chunks = 1
    while chunks < config.max_chunks and rows >= br * chunks * 2 * MIN_ROW_PROGRAMS:
        chunks *= 2
    return br, bc, chunks


def _gradient_tiles(
    grad: torch.Tensor | None,
    src: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    noise_args: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, float],
    *,
    relu: bool,
    noise: bool,
    mult_noise: bool,
    store: bool,
    sum_bias: bool,
    output: tuple[torch.Tensor, torch.Tensor] | None = None,
    config: TileConfig | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(g_z or None, Σ_n g_z (E, 1, d) or None, the weight sums (E, 1, d) or None). ``weight``
    given: ``src`` is a one-input layer's x (E, N, 1) and the sums are Σ_n x_n g_z; ``output``
    given, (g_out (E, N, 1), w_out (E, d, 1)): ``grad`` is None, ``src`` is z (E, N, d) of the
    layer before a one-output layer, and the sums are Σ_n h_n g_out,n; else ``src`` is z.
    ``noise_args``: (additive, multiplicative, keys, starts, point offset, sign); ``config``: the
    tiles (:data:`TILES` unless a benchmark compares others)."""
    additive, multiplicative, keys, starts, point_offset, sign = noise_args
    grad = grad.contiguous() if grad is not None else None
    e, rows = src.shape[:2]
    width = int(weight.shape[2] if weight is not None else src.shape[2])
    config = config if config is not None else TILES
    br, bc, chunks = tile_shape(rows, width, config)
    row_programs = triton.cdiv(rows, br * chunks)
    if row_programs > MAX_BLOCKS:
        raise ValueError(
            f"folded activation: {rows} examples per run; the kernel takes at most "
            f"{MAX_BLOCKS * br * chunks} (use smaller batches of examples)"
        )
    like = grad if grad is not None else src
    grad_z = torch.empty(e, rows, width, dtype=src.dtype, device=src.device) if store else None
    partial = (e, row_programs, width)
    bias_parts = torch.empty(partial, dtype=src.dtype, device=src.device) if sum_bias else None
    summed = weight is not None or output is not None
    weight_parts = torch.empty(partial, dtype=src.dtype, device=src.device) if summed else None
    g_out, w_out = (t.contiguous() for t in output) if output is not None else (like, like)
    _gradient_tiles_kernel[(e, row_programs, triton.cdiv(width, bc))](
        like,
        src,
        weight if weight is not None else like,
        bias if bias is not None else like,
        grad_z if grad_z is not None else like,
        bias_parts if bias_parts is not None else like,
        weight_parts if weight_parts is not None else like,
        g_out,
        w_out,
        additive,
        multiplicative,
        keys,
        starts,
        point_offset,
        sign,
        rows,
        row_programs,
        WIDTH=width,
        FROM_INPUT=weight is not None,
        FROM_OUTPUT=output is not None,
        HAS_BIAS=bias is not None,
        RELU=relu,
        NOISE=noise,
        MULT_NOISE=mult_noise,
        STORE_GZ=store,
        SUM_BIAS=sum_bias,
        BR=br,
        BC=bc,
        CHUNKS=chunks,
        ROLLED=config.rolled,
        SUM_AT_END=config.sum_at_end,
        num_warps=config.num_warps,
    )
    finish = lambda parts: parts.sum(1, keepdim=True) if parts is not None else None  # noqa: E731
    return grad_z, finish(bias_parts), finish(weight_parts)


class _FoldedActivation(_ActivateInject):
    """The fused activation kernel's forward; its backward sums the bias gradient as it writes g_z."""

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, bias, additive, multiplicative, keys, starts = ctx.saved_tensors
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
            (additive, multiplicative, keys, starts, point_offset, sign),
            relu=relu,
            noise=noise,
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
        ctx.save_for_backward(x, w, bias, additive, multiplicative, keys, starts)
        ctx.settings = (relu, point_offset, sign, noise, noise and multiplicative_anywhere)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w, bias, additive, multiplicative, keys, starts = ctx.saved_tensors
        relu, point_offset, sign, noise, mult_noise = ctx.settings
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        grad_z, grad_bias, grad_w = _gradient_tiles(
            grad,
            x,
            w,
            bias,
            (additive, multiplicative, keys, starts, point_offset, sign),
            relu=relu,
            noise=noise,
            mult_noise=mult_noise,
            store=needs_x,
            sum_bias=bias is not None and needs_b,
        )
        grad_x = torch.bmm(grad_z, w.transpose(1, 2)) if grad_z is not None else None
        return grad_x, grad_w if needs_w else None, grad_bias, *([None] * 9)


class _FoldedLastLayer(torch.autograd.Function):
    """The last hidden layer's bias, activation and noise and a one-output layer after it: only the
    output is written; the backward forms g = g_out w_outᵀ in the kernel and recomputes the hidden
    value (ε regenerated) for the output weight's gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: torch.Tensor,
        bias: torch.Tensor | None,
        w_out: torch.Tensor,
        b_out: torch.Tensor | None,
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
        z, w_out = z.contiguous(), w_out.contiguous()
        bias = bias.contiguous() if bias is not None else None
        e, rows, width = z.shape
        bc = triton.next_power_of_2(width)
        br = max(TILE_VALUES // bc, 1)
        if triton.cdiv(rows, br) > MAX_BLOCKS:
            raise ValueError(
                f"folded output layer: {rows} examples per run; the kernel takes at most "
                f"{MAX_BLOCKS * br} (use smaller batches of examples)"
            )
        out = torch.empty(e, rows, 1, dtype=z.dtype, device=z.device)
        _last_layer_forward_kernel[(e, triton.cdiv(rows, br))](
            z,
            bias if bias is not None else z,
            w_out,
            b_out if b_out is not None else z,
            out,
            additive,
            multiplicative,
            keys,
            starts,
            point_offset,
            sign,
            rows,
            WIDTH=width,
            HAS_BIAS=bias is not None,
            HAS_OUT_BIAS=b_out is not None,
            RELU=relu,
            NOISE=noise,
            BR=br,
            BC=bc,
        )
        ctx.save_for_backward(z, bias, w_out, additive, multiplicative, keys, starts)
        ctx.settings = (relu, point_offset, sign, noise, noise and multiplicative_anywhere, b_out is not None)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, bias, w_out, additive, multiplicative, keys, starts = ctx.saved_tensors
        relu, point_offset, sign, noise, mult_noise, has_out_bias = ctx.settings
        needs_z, needs_b, needs_w_out, needs_b_out = ctx.needs_input_grad[:4]
        grad_z, grad_bias, grad_w_out = _gradient_tiles(
            None,
            z,
            None,
            bias,
            (additive, multiplicative, keys, starts, point_offset, sign),
            relu=relu,
            noise=noise,
            mult_noise=mult_noise,
            store=needs_z,
            sum_bias=bias is not None and needs_b,
            output=(grad, w_out),
        )
        assert grad_w_out is not None
        return (
            grad_z,
            grad_bias,
            grad_w_out.transpose(1, 2) if needs_w_out else None,
            grad.sum(1, keepdim=True) if has_out_bias and needs_b_out else None,
            *([None] * 9),
        )


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


def folded_last_gpu(
    h: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str,
    w_out: torch.Tensor,
    b_out: torch.Tensor | None,
    additive: torch.Tensor,
    multiplicative: torch.Tensor,
    keys: torch.Tensor,
    starts: torch.Tensor,
    point_offset: int,
    sign: float,
    noise: bool,
    multiplicative_anywhere: bool,
) -> torch.Tensor | None:
    """The last hidden layer (h W by cuBLAS in the caller's precision context, then bias, activation
    and noise) and a one-output layer after it, (E, N, 1); ``None`` where the kernels do not apply
    (several outputs, a width the kernel's whole-row tiles do not take)."""
    width = int(w.shape[2])
    if not applies(h, w, activation) or int(w_out.shape[2]) != 1 or width > MAX_LAST_WIDTH:
        return None
    settings = (activation == "relu", additive, multiplicative, keys, starts, point_offset, sign)
    out: torch.Tensor = _FoldedLastLayer.apply(
        torch.bmm(h, w), bias, w_out, b_out, *settings, noise, multiplicative_anywhere
    )
    return out
