"""Adam over stacked parameters as one Triton kernel per tensor: a learning rate per run, and runs
the device has flagged inactive skipped (their weights and moments are neither read nor written).

Imported only where Triton is present (and, outside the tests' CPU interpreter, CUDA). PyTorch's
fused Adam takes one learning rate per call and updates every value it is given, so on a GPU the
stacked optimiser had to (a) zero a diverged run's NaN gradients in a pass of its own before the
update (the host learns of a divergence only every few steps, so the batch cannot simply leave that
run out), which still let the run's weights drift along its momentum until the host looked, and
(b) call the kernel once per group of runs sharing a learning rate. Here the kernel reads each run's
``active`` flag and step size from the device: one pass over the parameters, gradients and both
moments per step whatever the sweep's learning rates, a failed run's weights frozen at its last
finite step on the GPU as on the CPU, and nothing read back by the host (CUDA-graph capturable).

The update is ``torch.optim.Adam``'s (no weight decay, no AMSGrad), in the parameters' dtype with
IEEE square roots and divisions: m ← m + (1 − β₁)(g − m), v ← β₂ v + (1 − β₂) g², p ← p −
(lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε). The bias corrections and per-run step sizes are
computed on the device in float64 from the step count (a few tiny operations per step, not per
tensor; :func:`gni_engine.optim.adam_step_coefficients`). :func:`compare_adam_with_reference`
checks it against ``torch.optim.Adam`` run alone for each run in float64 (the start-up probe and
``benchmarks/gpu_checks.py``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from gni_engine.optim import adam_constants, adam_step_coefficients

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
BLOCK = 128 if INTERPRETED else 2048  # values a program updates
DTYPES = (torch.float32, torch.float64)


@triton.jit
def _adam_kernel(  # type: ignore[no-untyped-def]
    p_ptr,
    g_ptr,
    m_ptr,
    v_ptr,
    active_ptr,
    step_size_ptr,
    coefficients_ptr,
    n,
    blocks_per_run,
    IEEE_FP32: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Program (e, b) flattened: values b·BLOCK … of run e's n; nothing is touched where run e is off."""
    pid = tl.program_id(0)
    e = pid // blocks_per_run
    offs = (pid % blocks_per_run) * BLOCK + tl.arange(0, BLOCK)
    mask = (offs < n) & (tl.load(active_ptr + e) != 0)
    at = e.to(tl.int64) * n + offs
    p = tl.load(p_ptr + at, mask=mask, other=0.0)
    g = tl.load(g_ptr + at, mask=mask, other=0.0)
    m = tl.load(m_ptr + at, mask=mask, other=0.0)
    v = tl.load(v_ptr + at, mask=mask, other=0.0)
    one_minus_beta1 = tl.load(coefficients_ptr).to(p.dtype)
    beta2 = tl.load(coefficients_ptr + 1).to(p.dtype)
    one_minus_beta2 = tl.load(coefficients_ptr + 2).to(p.dtype)
    eps = tl.load(coefficients_ptr + 3).to(p.dtype)
    bias_correction2_sqrt = tl.load(coefficients_ptr + 4).to(p.dtype)
    step_size = tl.load(step_size_ptr + e).to(p.dtype)
    m = m + one_minus_beta1 * (g - m)  # torch's lerp_(g, 1 − β₁) for weights below ½
    v = v * beta2 + one_minus_beta2 * g * g
    if IEEE_FP32:  # Triton's fp32 sqrt and division are approximate unless asked
        denom = tl.div_rn(tl.sqrt_rn(v), bias_correction2_sqrt) + eps
        p = p - step_size * tl.div_rn(m, denom)
    else:
        denom = tl.sqrt(v) / bias_correction2_sqrt + eps
        p = p - step_size * (m / denom)
    tl.store(p_ptr + at, p, mask=mask)
    tl.store(m_ptr + at, m, mask=mask)
    tl.store(v_ptr + at, v, mask=mask)


def adam_step_gpu(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    active: torch.Tensor,
    step_size: torch.Tensor,
    coefficients: torch.Tensor,
) -> None:
    """One Adam update of every active run, in place; ``active`` (E,) bool, ``step_size`` (E,) and
    ``coefficients`` (5,) from :func:`gni_engine.optim.adam_step_coefficients`. A transposed
    gradient is made dense first."""
    flags = active.view(torch.uint8) if active.dtype == torch.bool else active  # bytes, not i1
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        if p.dtype not in DTYPES or not all(t.is_contiguous() and t.dtype == p.dtype for t in (p, m, v)):
            raise ValueError(
                f"the Adam kernel updates dense float32 or float64 parameters and moments; got "
                f"{p.dtype} {tuple(p.shape)} (dense: {p.is_contiguous()}, {m.is_contiguous()}, "
                f"{v.is_contiguous()})"
            )
        g = g if g.is_contiguous() else g.contiguous()
        n = p[0].numel()
        if n == 0:
            continue
        blocks = triton.cdiv(n, BLOCK)
        _adam_kernel[(p.shape[0] * blocks,)](
            p,
            g,
            m,
            v,
            flags,
            step_size,
            coefficients,
            n,
            blocks,
            IEEE_FP32=p.dtype == torch.float32,
            BLOCK=BLOCK,
        )


def compare_adam_with_reference(device: str | torch.device = "cuda") -> dict[str, float]:
    """Largest differences, relative to the largest reference value, between the kernel (on
    ``device``) and ``torch.optim.Adam`` run alone for each run in float64 on the CPU, after a few
    steps with a learning rate per run; one run goes inactive with NaN gradients and must stay
    exactly where it was (``inactive_moved``: 1.0 if any of its values changed)."""
    generator = torch.Generator().manual_seed(0)
    runs, steps, failing, fails_at = 3, 4, 1, 2
    lrs = [0.01, 0.003, 0.05]
    shapes = [(runs, 9, 5), (runs, 5), (runs, 300)]  # the last spans several interpreter blocks
    start = [torch.randn(shape, dtype=torch.float64, generator=generator) for shape in shapes]
    gradients = [
        [torch.randn(s, dtype=torch.float64, generator=generator) for s in shapes] for _ in range(steps)
    ]
    out: dict[str, float] = {}
    for dtype in DTYPES:
        params = [p.to(device=device, dtype=dtype, copy=True) for p in start]  # never ``start`` itself
        exp_avgs = [torch.zeros_like(p) for p in params]
        exp_avg_sqs = [torch.zeros_like(p) for p in params]
        active = torch.ones(runs, dtype=torch.bool, device=device)
        lr = torch.tensor(lrs, dtype=torch.float64, device=device)
        betas = (0.9, 0.999)
        constants = adam_constants(betas, 1e-8, torch.device(device))
        frozen: list[torch.Tensor] = []
        for t, grads in enumerate(gradients, start=1):
            grads = [g.to(device=device, dtype=dtype) for g in grads]
            if t == fails_at:
                active[failing] = False
                frozen = [p[failing].clone() for p in params + exp_avgs + exp_avg_sqs]
                for g in grads:
                    g[failing] = float("nan")
            step = torch.tensor(float(t), device=device)
            step_size, coefficients = adam_step_coefficients(step, lr, betas, constants)
            adam_step_gpu(params, grads, exp_avgs, exp_avg_sqs, active, step_size, coefficients)
        name = str(dtype).removeprefix("torch.")
        state = params + exp_avgs + exp_avg_sqs
        moved = any(not torch.equal(a[failing], b) for a, b in zip(state, frozen, strict=True))
        out[f"inactive_moved_{name}"] = float(moved)
        worst = 0.0
        for e in range(runs):
            if e == failing:
                continue
            alone = [p[e].clone().requires_grad_(True) for p in start]
            reference = torch.optim.Adam(alone, lr=lrs[e])
            for grads in gradients:
                for p, g in zip(alone, grads, strict=True):
                    p.grad = g[e].clone()
                reference.step()
            for got, want in zip(params, alone, strict=True):
                scale = float(want.detach().abs().max())
                worst = max(worst, float((got[e].double().cpu() - want.detach()).abs().max()) / scale)
        out[f"adam_{name}"] = worst
    return out
