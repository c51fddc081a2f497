"""The fused GPU kernel of a hidden layer under counter noise: bias, activation and noise in one pass.

Imported only where CUDA and Triton are present. For hidden layer k of a stacked MLP, the matrix
product z = h W comes from cuBLAS and one kernel computes the noisy input of the next layer,

    h' = φ(z + b) + s ε (a + m φ(z + b)),   φ ∈ {relu, identity},

reading z once and writing h' once (eager PyTorch reads and writes the tensor three times: the
bias copy of ``baddbmm``, the activation, the injection). The backward pass, g_z = g (1 + s m ε)
φ'(z + b), regenerates ε from the counters when the noise is multiplicative and keeps nothing
but z; the bias gradient is the sum of g_z over examples. The noise is the noise
``gni_engine.counter_noise_triton._inject_kernel`` would draw at that point (same counters, same
value layout), so the fused and the separate paths train the same runs.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import triton
import triton.language as tl

from gni_engine.counter_noise import FUSED_ACTIVATIONS
from gni_engine.counter_noise_triton import BLOCK, _grid, _normals

# Warps a program (512 counters). With 4, Triton's default, the noisy kernels take 116 registers a
# thread for sm_90 (16 warps an SM); with 8, 58 (benchmarks/compile_check.py). The values are the
# same either way (each is a function of its counter alone). Timed on an H100 (2026-11-28,
# benchmarks/noise_cost.py at the reference sweep's size): a hidden layer's noisy forward kernel
# took 0.959 ms with 4 and 0.856 with 8 (libdevice trig; shared: 1.033 and 0.898), the first layer's
# (one input) 1.025 and 1.050 (shared: 0.885 and 0.955). Backward launches were not timed with 8.
NUM_WARPS = 4  # backward launches, and the forward of a one-input first layer
HIDDEN_FORWARD_NUM_WARPS = 8  # the forward of a layer whose pre-activation z is read


def launch_warps(backward: bool, from_input: bool) -> int:
    """Warps a program for one launch of the kernel (see the constants above)."""
    return NUM_WARPS if backward or from_input else HIDDEN_FORWARD_NUM_WARPS


@triton.jit
def _activate_inject_kernel(  # type: ignore[no-untyped-def]
    z_ptr,
    bias_ptr,
    w_ptr,
    grad_ptr,
    dst_ptr,
    add_ptr,
    mul_ptr,
    keys_ptr,
    starts_ptr,
    point_offset,
    n,
    width,
    sign,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    NOISE: tl.constexpr,
    MULTIPLICATIVE: tl.constexpr,
    BACKWARD: tl.constexpr,
    FROM_INPUT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Forward: h = φ(z + b) + s ε (a + m φ(z + b)); backward: g_z = g (1 + s m ε) φ'(z + b).

    φ is ReLU or the identity. Same counters and value layout as ``_inject_kernel``, so the noise is
    the noise the separate injection would draw. ReLU as ``where(u < 0, 0, u)`` keeps a NaN (as
    ``torch.relu`` does), so divergence still reaches the loss. ``FROM_INPUT`` (forward only): a layer
    of one input, z = x w computed here from x (E, N, 1) at ``z_ptr`` and w (E, 1, width) at
    ``w_ptr`` (as ``fma(x, w, b)`` with a bias: the rounding the folded backward recomputes).
    """
    e = tl.program_id(0)
    b = tl.program_id(1)
    offs = b.to(tl.int64) * (4 * BLOCK) + tl.arange(0, 4 * BLOCK)
    mask = offs < n
    row = e.to(tl.int64) * n
    if FROM_INPUT:
        x = tl.load(z_ptr + e.to(tl.int64) * (n // width) + offs // width, mask=mask, other=0.0)
        w = tl.load(w_ptr + e.to(tl.int64) * width + offs % width, mask=mask, other=0.0)
        if HAS_BIAS:
            u = tl.fma(x, w, tl.load(bias_ptr + e.to(tl.int64) * width + offs % width, mask=mask, other=0.0))
        else:
            u = x * w
    else:
        u = tl.load(z_ptr + row + offs, mask=mask, other=0.0)
        if HAS_BIAS:
            u = u + tl.load(bias_ptr + e.to(tl.int64) * width + offs % width, mask=mask, other=0.0)
    if NOISE and (MULTIPLICATIVE or not BACKWARD):
        j = b * BLOCK + tl.arange(0, BLOCK)
        key = tl.load(keys_ptr + e)
        c = tl.load(starts_ptr + e) + point_offset + j.to(tl.int64)
        eps = _normals(c, key, BLOCK).to(u.dtype)
    if BACKWARD:
        g = tl.load(grad_ptr + row + offs, mask=mask, other=0.0)
        if NOISE and MULTIPLICATIVE:
            g = g + g * ((tl.load(mul_ptr + e) * sign) * eps)
        if RELU:
            g = tl.where(u > 0, g, 0.0)
        tl.store(dst_ptr + row + offs, g, mask=mask)
    else:
        h = u
        if RELU:
            h = tl.where(u < 0, 0.0, u)
        if NOISE:
            h = h + eps * (tl.load(add_ptr + e) * sign + (tl.load(mul_ptr + e) * sign) * h)
        tl.store(dst_ptr + row + offs, h, mask=mask)


class _ActivateInject(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: torch.Tensor,
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
        z = z.contiguous()
        bias = bias.contiguous() if bias is not None else None
        out = torch.empty_like(z)
        _launch_activate(
            z,
            bias,
            z,
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
        )
        ctx.save_for_backward(z, bias, additive, multiplicative, keys, starts)
        ctx.settings = (relu, point_offset, sign, noise, multiplicative_anywhere)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, bias, additive, multiplicative, keys, starts = ctx.saved_tensors
        relu, point_offset, sign, noise, multiplicative_anywhere = ctx.settings
        if not relu and not (noise and multiplicative_anywhere):
            grad_z = grad  # the identity
        else:
            grad_z = torch.empty_like(z)
            _launch_activate(
                z,
                bias,
                grad.contiguous(),
                grad_z,
                relu,
                additive,
                multiplicative,
                keys,
                starts,
                point_offset,
                sign,
                noise=noise,
                has_multiplicative=multiplicative_anywhere,
                backward=True,
            )
        grad_bias = grad_z.sum(1, keepdim=True) if bias is not None and ctx.needs_input_grad[1] else None
        return grad_z, grad_bias, None, None, None, None, None, None, None, None, None


def _launch_activate(
    z: torch.Tensor,
    bias: torch.Tensor | None,
    grad: torch.Tensor,
    dst: torch.Tensor,
    relu: bool,
    additive: torch.Tensor,
    multiplicative: torch.Tensor,
    keys: torch.Tensor,
    starts: torch.Tensor,
    point_offset: int,
    sign: float,
    *,
    noise: bool,
    has_multiplicative: bool,
    backward: bool,
    weight: torch.Tensor | None = None,
) -> None:
    """One launch of the kernel; ``weight`` (E, 1, width): z holds a one-input layer's x (forward)."""
    n = dst[0].numel()
    _activate_inject_kernel[_grid(dst.shape[0], n)](
        z,
        bias if bias is not None else z,
        weight if weight is not None else z,
        grad,
        dst,
        additive,
        multiplicative,
        keys,
        starts,
        point_offset,
        n,
        dst.shape[-1],
        sign,
        HAS_BIAS=bias is not None,
        RELU=relu,
        NOISE=noise,
        MULTIPLICATIVE=has_multiplicative,
        BACKWARD=backward,
        FROM_INPUT=weight is not None,
        BLOCK=BLOCK,
        num_warps=launch_warps(backward, weight is not None),
    )


def activate_inject_gpu(
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
    """φ(z + b) with its noise, h + s ε (a + m h), in one kernel (φ: relu or linear; b (E, 1, d))."""
    if activation not in FUSED_ACTIVATIONS:
        raise ValueError(f"the fused kernel takes relu or linear, not {activation!r}")
    out: torch.Tensor = _ActivateInject.apply(
        z,
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
    )
    return out


def compare_fused_with_reference(
    device: str | torch.device = "cuda", *, every_variant: bool = True
) -> dict[str, float]:
    """Largest absolute differences between the fused bias–activation–noise kernel and its
    definition (:func:`gni_engine.counter_noise.reference_activator`, on the CPU): output, and the
    gradients of z and b, in fp64 and fp32. ``every_variant=False`` checks the variants a ReLU
    network's training compiles (bias, noise; additive-only and multiplicative backward) — what
    the start-up probe runs; the rest compile on first use. ``nan_kept`` is 1 where a NaN in z did
    not reach the output (divergence must reach the loss)."""
    from gni_engine.counter_noise import reference_activator

    keys = torch.tensor([3, 2**62 + 1, 12345], dtype=torch.int64)
    starts = torch.tensor([0, 2**32 - 7, 2**40 + 3], dtype=torch.int64)
    generator = torch.Generator().manual_seed(1)
    out: dict[str, float] = {}
    variants = (
        list(itertools.product((True, False), ("relu", "linear"), (True, False), (True, False)))
        if every_variant
        else [(True, "relu", True, True), (True, "relu", True, False)]
    )
    for dtype in (torch.float64, torch.float32):
        z = torch.randn(3, 50, 7, dtype=dtype, generator=generator)
        g = torch.randn(3, 50, 7, dtype=dtype, generator=generator)
        bias = torch.randn(3, 1, 7, dtype=dtype, generator=generator)
        for has_bias, activation, noise, multiplicative in variants:
            a = torch.tensor([0.1, 0.0, 0.2], dtype=dtype)
            m = torch.tensor([0.0, 0.3, 0.2] if multiplicative else [0.0, 0.0, 0.0], dtype=dtype)
            sign = -1.0 if multiplicative else 1.0
            settings = (11, sign, noise, multiplicative)
            z_ref = z.clone().requires_grad_(True)
            b_ref = bias.clone().requires_grad_(True) if has_bias else None
            ref = reference_activator(z_ref, b_ref, activation, a, m, keys, starts, *settings)
            ref_grads = torch.autograd.grad(ref, [t for t in (z_ref, b_ref) if t is not None], g)
            z_dev = z.to(device).requires_grad_(True)
            b_dev = bias.to(device).requires_grad_(True) if has_bias else None
            a_dev, m_dev, keys_dev, starts_dev = (t.to(device) for t in (a, m, keys, starts))
            got = activate_inject_gpu(z_dev, b_dev, activation, a_dev, m_dev, keys_dev, starts_dev, *settings)
            got_grads = torch.autograd.grad(got, [t for t in (z_dev, b_dev) if t is not None], g.to(device))
            name = (
                f"fused_{str(dtype).removeprefix('torch.')}_{activation}"
                f"{'_bias' if has_bias else ''}{'_noise' if noise else ''}{'_mult' if multiplicative else ''}"
            )
            out[name] = float((got.detach().cpu() - ref.detach()).abs().max())
            for label, mine, theirs in zip(("z", "bias"), got_grads, ref_grads, strict=False):
                out[f"{name}_grad_{label}"] = float((mine.cpu() - theirs).abs().max())
    nan_z = torch.zeros(1, 2, 3, device=device)
    nan_z[0, 1, 2] = float("nan")
    zero = torch.zeros(1, device=device)
    kept = activate_inject_gpu(
        nan_z, None, "relu", zero, zero, keys[:1].to(device), starts[:1].to(device), 0, 1.0, False, False
    )
    out["nan_kept"] = 0.0 if bool(torch.isnan(kept[0, 1, 2])) else 1.0
    return out
