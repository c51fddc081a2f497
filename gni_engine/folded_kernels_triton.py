"""The folded activation kernels' Triton code: bias, activation and counter noise of a layer, with
its gradients' column sums, and a one-output layer folded in.

:mod:`gni_engine.folded_activation_triton` launches them (tile sizes, autograd, the reasons for
folding); :mod:`gni_engine.folded_check_triton` compares them with their definition. Every
size is a ``tl.constexpr`` argument: nothing here reads a module setting.
"""

from __future__ import annotations

import triton
import triton.language as tl

from gni_engine.counter_noise_triton import _noise_tile


@triton.jit
def _noisy_value(u, eps, add_ptr, mul_ptr, e, sign, RELU: tl.constexpr, NOISE: tl.constexpr):  # type: ignore[no-untyped-def]
    """h = φ(u) + s ε (a + m φ(u)); ``where(u < 0, 0, u)`` keeps a NaN, so divergence reaches the loss."""
    h = u
    if RELU:
        h = tl.where(u < 0, 0.0, u)
    if NOISE:
        h = h + eps * (tl.load(add_ptr + e) * sign + (tl.load(mul_ptr + e) * sign) * h)
    return h


@triton.jit
def _tile_pre_activation(  # type: ignore[no-untyped-def]
    src_ptr,
    w,
    b,
    e,
    rows,
    row_ok,
    inside,
    at,
    rows_total,
    FROM_INPUT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BR: tl.constexpr,
    BC: tl.constexpr,
):
    """(u, x): u = z + b read at ``at``, or fma(x, w, b) from a one-input layer's x (E, N, 1), with
    x broadcast over the tile (u again when not ``FROM_INPUT``)."""
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
        xs = u
    return u, xs


@triton.jit
def _gradient_chunk(  # type: ignore[no-untyped-def]
    g_acc,
    xg_acc,
    chunk,
    g_ptr,
    src_ptr,
    gz_ptr,
    out_grad_ptr,
    add_ptr,
    mul_ptr,
    keys_ptr,
    starts_ptr,
    point_offset,
    sign,
    rows_total,
    e,
    run,
    col0,
    w,
    w_out,
    b,
    WIDTH: tl.constexpr,
    FROM_INPUT: tl.constexpr,
    FROM_OUTPUT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    NOISE: tl.constexpr,
    MULT_NOISE: tl.constexpr,
    STORE_GZ: tl.constexpr,
    SUM_AT_END: tl.constexpr,
    BR: tl.constexpr,
    BC: tl.constexpr,
):
    """One (BR, BC) tile of :func:`_gradient_tiles_kernel` at row chunk ``chunk``: stores g_z and adds
    the tile's g_z and x g_z (or h g_out) to the accumulators — whole tiles when ``SUM_AT_END``,
    else their column sums."""
    rows = chunk * BR + tl.arange(0, BR)
    cols = col0 + tl.arange(0, BC)
    col_ok = cols < WIDTH
    row_ok = rows < rows_total
    inside = row_ok[:, None] & col_ok[None, :]
    at = run + rows.to(tl.int64)[:, None] * WIDTH + cols[None, :]
    u, xs = _tile_pre_activation(
        src_ptr, w, b, e, rows, row_ok, inside, at, rows_total, FROM_INPUT, HAS_BIAS, BR, BC
    )
    if FROM_OUTPUT:
        g_out = tl.load(out_grad_ptr + e * rows_total + rows, mask=row_ok, other=0.0)
        g = g_out[:, None] * w_out[None, :]
    else:
        g = tl.load(g_ptr + at, mask=inside, other=0.0)
    eps = u  # not read unless drawn
    if MULT_NOISE or (FROM_OUTPUT and NOISE):
        eps = _noise_tile(keys_ptr, starts_ptr, e, point_offset, rows, col0, WIDTH, BR, BC).to(g.dtype)
    xg = g  # the weight's summand, where there is one
    if FROM_OUTPUT:
        xg = _noisy_value(u, eps, add_ptr, mul_ptr, e, sign, RELU, NOISE) * g_out[:, None]
    if MULT_NOISE:
        g = g + g * ((tl.load(mul_ptr + e) * sign) * eps)
    if RELU:
        g = tl.where(u > 0, g, 0.0)
    if STORE_GZ:
        tl.store(gz_ptr + at, g, mask=inside)
    if FROM_INPUT:
        xg = g * xs
    if SUM_AT_END:
        g_acc += g
        if FROM_INPUT or FROM_OUTPUT:
            xg_acc += xg
    else:
        g_acc += tl.sum(g, axis=0)
        if FROM_INPUT or FROM_OUTPUT:
            xg_acc += tl.sum(xg, axis=0)
    return g_acc, xg_acc


@triton.jit
def _gradient_tiles_kernel(  # type: ignore[no-untyped-def]
    g_ptr,
    src_ptr,
    w_ptr,
    bias_ptr,
    gz_ptr,
    bias_sum_ptr,
    weight_sum_ptr,
    out_grad_ptr,
    out_w_ptr,
    add_ptr,
    mul_ptr,
    keys_ptr,
    starts_ptr,
    point_offset,
    sign,
    rows_total,
    row_programs,
    WIDTH: tl.constexpr,
    FROM_INPUT: tl.constexpr,
    FROM_OUTPUT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    NOISE: tl.constexpr,
    MULT_NOISE: tl.constexpr,
    STORE_GZ: tl.constexpr,
    SUM_BIAS: tl.constexpr,
    BR: tl.constexpr,
    BC: tl.constexpr,
    CHUNKS: tl.constexpr,
    ROLLED: tl.constexpr,
    SUM_AT_END: tl.constexpr,
):
    """g_z = g (1 + s m ε) φ'(u) on CHUNKS × BR rows and BC columns of run e, with u = z + b read
    from ``src`` or, ``FROM_INPUT``, recomputed as fma(x, w, b) from x (E, N, 1). ``FROM_OUTPUT``
    (the last hidden layer, before a one-output layer): g = g_out w_outᵀ is formed here from
    g_out (E, N, 1) and w_out (E, WIDTH, 1), and the layer's value h = φ(u) + s ε (a + m φ(u)) is
    recomputed (ε regenerated) for the output weight's gradient Σ h g_out. Writes g_z when
    ``STORE_GZ``, and this program's column sums Σ g_z (``SUM_BIAS``) and Σ x g_z (``FROM_INPUT``)
    or Σ h g_out (``FROM_OUTPUT``) into row ``program_id(1)`` of the (E, row_programs, WIDTH)
    partial sums. ``ROLLED``: the chunks are a loop rather than unrolled; ``SUM_AT_END``: whole
    tiles are accumulated and summed down the rows once, rather than each chunk's."""
    e = tl.program_id(0).to(tl.int64)
    pr = tl.program_id(1)
    col0 = tl.program_id(2) * BC
    cols = col0 + tl.arange(0, BC)
    col_ok = cols < WIDTH
    # the parameter rows of this tile's columns (each pointer is valid whether or not used)
    w = tl.load(w_ptr + e * WIDTH + cols, mask=col_ok, other=0.0)
    w_out = tl.load(out_w_ptr + e * WIDTH + cols, mask=col_ok, other=0.0)
    b = tl.load(bias_ptr + e * WIDTH + cols, mask=col_ok, other=0.0)
    run = e * rows_total * WIDTH
    if SUM_AT_END:
        g_acc = tl.zeros((BR, BC), dtype=g_ptr.dtype.element_ty)
        xg_acc = tl.zeros((BR, BC), dtype=g_ptr.dtype.element_ty)
    else:
        g_acc = tl.zeros((BC,), dtype=g_ptr.dtype.element_ty)
        xg_acc = tl.zeros((BC,), dtype=g_ptr.dtype.element_ty)
    if ROLLED:
        for i in range(CHUNKS):
            g_acc, xg_acc = _gradient_chunk(
                g_acc, xg_acc, pr * CHUNKS + i, g_ptr, src_ptr, gz_ptr, out_grad_ptr, add_ptr,
                mul_ptr, keys_ptr, starts_ptr, point_offset, sign, rows_total, e, run, col0, w,
                w_out, b, WIDTH, FROM_INPUT, FROM_OUTPUT, HAS_BIAS, RELU, NOISE, MULT_NOISE,
                STORE_GZ, SUM_AT_END, BR, BC,
            )  # fmt: skip
    else:
        for i in tl.static_range(CHUNKS):
            g_acc, xg_acc = _gradient_chunk(
                g_acc, xg_acc, pr * CHUNKS + i, g_ptr, src_ptr, gz_ptr, out_grad_ptr, add_ptr,
                mul_ptr, keys_ptr, starts_ptr, point_offset, sign, rows_total, e, run, col0, w,
                w_out, b, WIDTH, FROM_INPUT, FROM_OUTPUT, HAS_BIAS, RELU, NOISE, MULT_NOISE,
                STORE_GZ, SUM_AT_END, BR, BC,
            )  # fmt: skip
    if SUM_AT_END:
        g_sum = tl.sum(g_acc, axis=0)
        xg_sum = tl.sum(xg_acc, axis=0)
    else:
        g_sum = g_acc
        xg_sum = xg_acc
    partial = (e * row_programs + pr) * WIDTH + cols
    if SUM_BIAS:
        tl.store(bias_sum_ptr + partial, g_sum, mask=col_ok)
    if FROM_INPUT or FROM_OUTPUT:
        tl.store(weight_sum_ptr + partial, xg_sum, mask=col_ok)


@triton.jit
def _last_layer_forward_kernel(  # type: ignore[no-untyped-def]
    z_ptr,
    bias_ptr,
    out_w_ptr,
    out_b_ptr,
    out_ptr,
    add_ptr,
    mul_ptr,
    keys_ptr,
    starts_ptr,
    point_offset,
    sign,
    rows_total,
    WIDTH: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_OUT_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    NOISE: tl.constexpr,
    BR: tl.constexpr,
    BC: tl.constexpr,
):
    """out = (φ(z + b) + s ε (a + m φ(z + b))) w_out + b_out for BR whole rows (BC ≥ WIDTH) of run e:
    the last hidden layer's value is summed into the one output and never written."""
    e = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BR + tl.arange(0, BR)
    cols = tl.arange(0, BC)
    row_ok = rows < rows_total
    col_ok = cols < WIDTH
    at = e * rows_total * WIDTH + rows.to(tl.int64)[:, None] * WIDTH + cols[None, :]
    u = tl.load(z_ptr + at, mask=row_ok[:, None] & col_ok[None, :], other=0.0)
    if HAS_BIAS:
        u = u + tl.load(bias_ptr + e * WIDTH + cols, mask=col_ok, other=0.0)[None, :]
    eps = u
    if NOISE:
        eps = _noise_tile(keys_ptr, starts_ptr, e, point_offset, rows, 0, WIDTH, BR, BC).to(u.dtype)
    h = _noisy_value(u, eps, add_ptr, mul_ptr, e, sign, RELU, NOISE)
    w_out = tl.load(out_w_ptr + e * WIDTH + cols, mask=col_ok, other=0.0)  # 0 beyond WIDTH
    out = tl.sum(h * w_out[None, :], axis=1)
    if HAS_OUT_BIAS:
        out = out + tl.load(out_b_ptr + e)
    tl.store(out_ptr + e * rows_total + rows, out, mask=row_ok)
