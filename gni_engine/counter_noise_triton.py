"""The GPU kernel of :mod:`gni_engine.counter_noise`: draw and inject every run's noise in one launch.

Imported only where CUDA and Triton are present. Program (e, b) handles counters b·BLOCK … of run e
at one injection point: Philox4x32-10 gives four 32-bit words per counter, Box–Muller turns them
into four normals, which are laid out contiguously (value 4j + lane) and applied to the activations
read once and written once. The backward pass of multiplicative noise, g (1 + s m ε), regenerates ε
from the same counters instead of keeping it.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import triton
import triton.language as tl

BLOCK = 512  # counters per program: 2,048 values
MAX_BLOCKS = 65_535  # programs per run and injection point (grid dimension 1)


@triton.jit
def _uniform(bits):  # type: ignore[no-untyped-def]
    return ((bits >> 8) + 1).to(tl.float32) * 5.9604644775390625e-08  # (0, 1], 2**-24 steps


@triton.jit
def _normals(c, key, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
    k0 = (key & 0xFFFFFFFF).to(tl.uint32)
    k1 = ((key >> 32) & 0xFFFFFFFF).to(tl.uint32)
    c0 = (c & 0xFFFFFFFF).to(tl.uint32)
    c1 = ((c >> 32) & 0xFFFFFFFF).to(tl.uint32)
    c2 = tl.zeros_like(c0)
    c3 = tl.zeros_like(c0)
    for r in tl.static_range(10):
        if r > 0:
            k0 = k0 + 0x9E3779B9
            k1 = k1 + 0xBB67AE85
        hi0 = tl.umulhi(c0, 0xD2511F53)
        lo0 = c0 * 0xD2511F53
        hi1 = tl.umulhi(c2, 0xCD9E8D57)
        lo1 = c2 * 0xCD9E8D57
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    r01 = tl.sqrt(-2.0 * tl.log(_uniform(c0)))
    a01 = 6.283185307179586 * _uniform(c1)
    r23 = tl.sqrt(-2.0 * tl.log(_uniform(c2)))
    a23 = 6.283185307179586 * _uniform(c3)
    z0 = r01 * tl.cos(a01)
    z1 = r01 * tl.sin(a01)
    z2 = r23 * tl.cos(a23)
    z3 = r23 * tl.sin(a23)
    # join stacks on a new last axis: [j, p, q] = (z0, z2 | z1, z3)[q][p] flattens to z0 z1 z2 z3 per counter
    return tl.reshape(tl.join(tl.join(z0, z2), tl.join(z1, z3)), [4 * BLOCK])


@triton.jit
def _inject_kernel(  # type: ignore[no-untyped-def]
    src_ptr,
    dst_ptr,
    add_ptr,
    mul_ptr,
    keys_ptr,
    starts_ptr,
    point_offset,
    n,
    sign,
    BACKWARD: tl.constexpr,
    NORMALS_ONLY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    e = tl.program_id(0)
    b = tl.program_id(1)
    j = b * BLOCK + tl.arange(0, BLOCK)
    key = tl.load(keys_ptr + e)
    c = tl.load(starts_ptr + e) + point_offset + j.to(tl.int64)
    z = _normals(c, key, BLOCK)
    offs = b.to(tl.int64) * (4 * BLOCK) + tl.arange(0, 4 * BLOCK)
    mask = offs < n
    row = e.to(tl.int64) * n
    if NORMALS_ONLY:
        tl.store(dst_ptr + row + offs, z, mask=mask)
    else:
        v = tl.load(src_ptr + row + offs, mask=mask, other=0.0)
        z = z.to(v.dtype)
        m = tl.load(mul_ptr + e) * sign
        if BACKWARD:
            out = v + v * (m * z)  # g (1 + s m ε)
        else:
            a = tl.load(add_ptr + e) * sign
            out = v + z * (a + m * v)
        tl.store(dst_ptr + row + offs, out, mask=mask)


@triton.jit
def _activate_inject_kernel(  # type: ignore[no-untyped-def]
    z_ptr,
    bias_ptr,
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
    BLOCK: tl.constexpr,
):
    """Forward: h = φ(z + b) + s ε (a + m φ(z + b)); backward: g_z = g (1 + s m ε) φ'(z + b).

    φ is ReLU or the identity. Same counters and value layout as ``_inject_kernel``, so the noise is
    the noise the separate injection would draw. ReLU as ``where(u < 0, 0, u)`` keeps a NaN (as
    ``torch.relu`` does), so divergence still reaches the loss.
    """
    e = tl.program_id(0)
    b = tl.program_id(1)
    offs = b.to(tl.int64) * (4 * BLOCK) + tl.arange(0, 4 * BLOCK)
    mask = offs < n
    row = e.to(tl.int64) * n
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


def _grid(e: int, n: int) -> tuple[int, int]:
    blocks = triton.cdiv(triton.cdiv(n, 4), BLOCK)
    if blocks > MAX_BLOCKS:  # CUDA's limit on a grid's second dimension
        raise ValueError(
            f"counter noise: {n} values per run at one injection point; the kernel takes at most "
            f"{MAX_BLOCKS * BLOCK * 4} (use smaller batches of examples)"
        )
    return (e, blocks)


def _launch(
    src: torch.Tensor,
    dst: torch.Tensor,
    additive: torch.Tensor,
    multiplicative: torch.Tensor,
    keys: torch.Tensor,
    starts: torch.Tensor,
    point_offset: int,
    sign: float,
    *,
    backward: bool = False,
    normals_only: bool = False,
) -> None:
    n = dst[0].numel()
    _inject_kernel[_grid(dst.shape[0], n)](
        src,
        dst,
        additive,
        multiplicative,
        keys,
        starts,
        point_offset,
        n,
        sign,
        BACKWARD=backward,
        NORMALS_ONLY=normals_only,
        BLOCK=BLOCK,
    )


def counter_normals_gpu(keys: torch.Tensor, starts: torch.Tensor, n: int) -> torch.Tensor:
    """(E, n) float32 normals, the same numbers as :func:`gni_engine.counter_noise.counter_normals`."""
    out = torch.empty((len(keys), n), dtype=torch.float32, device=keys.device)
    _launch(out, out, out, out, keys, starts, 0, 1.0, normals_only=True)
    return out


class _Inject(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        h: torch.Tensor,
        additive: torch.Tensor,
        multiplicative: torch.Tensor,
        keys: torch.Tensor,
        starts: torch.Tensor,
        point_offset: int,
        sign: float,
        multiplicative_anywhere: bool,
    ) -> torch.Tensor:
        h = h.contiguous()
        out = torch.empty_like(h)
        _launch(h, out, additive, multiplicative, keys, starts, point_offset, sign)
        ctx.save_for_backward(additive, multiplicative, keys, starts)
        ctx.point_offset, ctx.sign, ctx.multiplicative_anywhere = point_offset, sign, multiplicative_anywhere
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if not ctx.multiplicative_anywhere:  # additive noise: the identity
            return grad, None, None, None, None, None, None, None
        additive, multiplicative, keys, starts = ctx.saved_tensors
        grad = grad.contiguous()
        out = torch.empty_like(grad)
        _launch(grad, out, additive, multiplicative, keys, starts, ctx.point_offset, ctx.sign, backward=True)
        return out, None, None, None, None, None, None, None


def inject_gpu(
    h: torch.Tensor,
    additive: torch.Tensor,
    multiplicative: torch.Tensor,
    keys: torch.Tensor,
    starts: torch.Tensor,
    point_offset: int,
    sign: float,
    multiplicative_anywhere: bool,
) -> torch.Tensor:
    """h + s ε (a + m h) in one kernel; a, m (E,) in h's dtype, contiguous."""
    out: torch.Tensor = _Inject.apply(
        h, additive, multiplicative, keys, starts, point_offset, sign, multiplicative_anywhere
    )
    return out


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
) -> None:
    n = z[0].numel()
    _activate_inject_kernel[_grid(z.shape[0], n)](
        z,
        bias if bias is not None else z,
        grad,
        dst,
        additive,
        multiplicative,
        keys,
        starts,
        point_offset,
        n,
        z.shape[-1],
        sign,
        HAS_BIAS=bias is not None,
        RELU=relu,
        NOISE=noise,
        MULTIPLICATIVE=has_multiplicative,
        BACKWARD=backward,
        BLOCK=BLOCK,
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
    if activation not in ("relu", "linear"):
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


def compare_with_reference(device: str | torch.device = "cuda") -> dict[str, float]:
    """Largest absolute differences between this kernel (run on ``device``) and the pure-torch
    definition (on the CPU): the normals, and the injection and its backward for both signs, with a
    counter crossing 2**32. Float32 rounding of log, cos and sin gives ~1e-6; a wrong integer word
    would give O(1)."""
    from gni_engine.counter_noise import counter_normals, inject_reference

    keys = torch.tensor([3, 2**62 + 1, 12345], dtype=torch.int64)
    starts = torch.tensor([0, 2**32 - 7, 2**40 + 3], dtype=torch.int64)
    n = 70_001
    fast = counter_normals_gpu(keys.to(device), starts.to(device), n).cpu()
    out = {"normals": float((fast - counter_normals(keys, starts, n)).abs().max())}
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float64, torch.float32):  # every variant training compiles
        h = torch.randn(3, 50, 7, dtype=dtype, generator=generator)
        g = torch.randn(3, 50, 7, dtype=dtype, generator=generator)
        a = torch.tensor([0.1, 0.0, 0.2], dtype=dtype)
        m = torch.tensor([0.0, 0.3, 0.2], dtype=dtype)
        for sign in (1.0, -1.0):
            h_ref = h.clone().requires_grad_(True)
            ref = inject_reference(h_ref, a, m, keys, starts + 11, sign)
            (ref_grad,) = torch.autograd.grad(ref, h_ref, g)
            h_dev = h.to(device).requires_grad_(True)
            a_dev, m_dev, keys_dev, starts_dev = (t.to(device) for t in (a, m, keys, starts))
            got = inject_gpu(h_dev, a_dev, m_dev, keys_dev, starts_dev, 11, sign, True)
            (got_grad,) = torch.autograd.grad(got, h_dev, g.to(device))
            name = f"{str(dtype).removeprefix('torch.')}{sign:+.0f}"
            out[f"inject_{name}"] = float((got.detach().cpu() - ref.detach()).abs().max())
            out[f"inject_backward_{name}"] = float((got_grad.cpu() - ref_grad).abs().max())
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
