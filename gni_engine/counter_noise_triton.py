"""The GPU kernel of :mod:`gni_engine.counter_noise`: draw and inject every run's noise in one launch.

Imported only where CUDA and Triton are present. Program (e, b) handles counters b·BLOCK … of run e
at one injection point: Philox4x32-10 gives four 32-bit words per counter, Box–Muller turns them
into four normals, which are laid out contiguously (value 4j + lane) and applied to the activations
read once and written once. The backward pass of multiplicative noise, g (1 + s m ε), regenerates ε
from the same counters instead of keeping it.

Box–Muller's cosine and sine come, by default (``GNI_NOISE_TRIG=shared``, read when this module is
imported), from :func:`_cos_sin_shared`: one reduction for both and single-precision polynomials,
within 1e-7 of the exact values; with ``GNI_NOISE_TRIG=libdevice``, from libdevice (``tl.cos``,
``tl.sin``: each reduces its angle on its own; 4e-8). Both are checked over all 2²⁴ angles a draw
can take, by :func:`trig_errors`: the same normals to float32 rounding. On an H100 (2026-11-28) the
shared reduction drew 466 G normals/s against libdevice's 360 G, and the reference TF32 sweep ran at
29.71 runs/s against 28.09 (docs/performance.md). Results name the variant in their
``noise_stream`` (:data:`STREAM_LABEL`: ``+shared-trig`` for the shared reduction).
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from gni_engine.counter_noise import NOISE_TRIG_CHOICES, noise_trig

BLOCK = 512  # counters per program: 2,048 values
MAX_BLOCKS = 65_535  # programs per run and injection point (grid dimension 1)
NOISE_TRIG = noise_trig()  # read once: the kernels compile with one choice
STREAM_LABEL = "philox-counter/triton" + ("" if NOISE_TRIG == "libdevice" else f"+{NOISE_TRIG}-trig")


@triton.jit
def _uniform(bits):  # type: ignore[no-untyped-def]
    return ((bits >> 8) + 1).to(tl.float32) * 5.9604644775390625e-08  # (0, 1], 2**-24 steps


@triton.jit
def _cos_sin_libdevice(a):  # type: ignore[no-untyped-def]
    return tl.cos(a), tl.sin(a)


@triton.jit
def _cos_sin_shared(a):  # type: ignore[no-untyped-def]
    """cos a, sin a for a in (0, 2π]: a = qπ/2 + r with |r| ≤ π/4 (Cody–Waite, two parts of π/2,
    exact for q ≤ 4), cephes' single-precision polynomials for sin r and cos r, and the quadrant's
    signs and swap."""
    q = tl.floor(a * 0.6366197723675814 + 0.5)
    r = tl.fma(q, -1.5707963705062866, a)
    r = tl.fma(q, 4.371139000186243e-08, r)
    z = r * r
    s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4))
    c = (
        1.0
        - 0.5 * z
        + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5))
    )
    quadrant = q.to(tl.int32) & 3
    swap = (quadrant & 1) != 0
    cos_a = tl.where(swap, s, c)
    sin_a = tl.where(swap, c, s)
    cos_a = tl.where((quadrant == 1) | (quadrant == 2), -cos_a, cos_a)
    sin_a = tl.where(quadrant >= 2, -sin_a, sin_a)
    return cos_a, sin_a


_cos_sin = _cos_sin_shared if NOISE_TRIG == "shared" else _cos_sin_libdevice


@triton.jit
def _normal_words(c, key):  # type: ignore[no-untyped-def]
    """The four normals of each int64 counter in c (any shape) under one run's key: z0, z1, z2, z3."""
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
    cos01, sin01 = _cos_sin(a01)
    cos23, sin23 = _cos_sin(a23)
    return r01 * cos01, r01 * sin01, r23 * cos23, r23 * sin23


@triton.jit
def _normals(c, key, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
    z0, z1, z2, z3 = _normal_words(c, key)
    # join stacks on a new last axis: [j, p, q] = (z0, z2 | z1, z3)[q][p] flattens to z0 z1 z2 z3 per counter
    return tl.reshape(tl.join(tl.join(z0, z2), tl.join(z1, z3)), [4 * BLOCK])


@triton.jit
def _noise_tile(  # type: ignore[no-untyped-def]
    keys_ptr, starts_ptr, e, point_offset, rows, col0, N: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr
):
    """(BM, BN) normals of run e at rows ``rows``, columns col0 … col0 + BN − 1 of its (·, N) block
    (N, col0 and BN multiples of 4): the values the flat layout above puts there."""
    quads = (col0 // 4 + tl.arange(0, BN // 4)).to(tl.int64)
    c = tl.load(starts_ptr + e) + point_offset + rows.to(tl.int64)[:, None] * (N // 4) + quads[None, :]
    z0, z1, z2, z3 = _normal_words(c, tl.load(keys_ptr + e))
    # [r, q, p, t] = z_{2p+t} of counter q: row r's values 4q … 4q + 3 in order
    return tl.reshape(tl.join(tl.join(z0, z2), tl.join(z1, z3)), [BM, BN])


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


@triton.jit
def _angles_kernel(out_ptr, n, SHARED: tl.constexpr, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    a = 6.283185307179586 * ((i + 1).to(tl.float32) * 5.9604644775390625e-08)
    if SHARED:
        cos_a, sin_a = _cos_sin_shared(a)
    else:
        cos_a, sin_a = _cos_sin_libdevice(a)
    tl.store(out_ptr + i, cos_a, mask=mask)
    tl.store(out_ptr + n + i, sin_a, mask=mask)


def trig_errors(device: str | torch.device = "cuda") -> dict[str, float]:
    """Largest absolute errors of Box–Muller's cosine and sine, both ways (libdevice's and the
    shared reduction), over every angle 2π u a draw can take (u = 1, …, 2²⁴ times 2⁻²⁴, the angle
    rounded to float32 as the kernels and the definition round it), against float64."""
    n = 2**24
    u = torch.arange(1, n + 1, dtype=torch.float32, device=device) * 2.0**-24
    angle = (6.283185307179586 * u).double()
    exact = torch.cat([torch.cos(angle), torch.sin(angle)])
    out: dict[str, float] = {}
    for name in NOISE_TRIG_CHOICES:
        got = torch.empty(2 * n, dtype=torch.float32, device=device)
        block = 2**16 if torch.device(device).type == "cpu" else 1024  # the interpreter: few programs
        _angles_kernel[(n // block,)](got, n, SHARED=name == "shared", BLOCK=block)
        out[f"trig_{name}"] = float((got.double() - exact).abs().max())
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
