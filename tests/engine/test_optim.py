"""The stacked optimiser against ``torch.optim`` applied to each run alone, in float64."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from gni_engine.optim import AdamKernel, StackedOptimiser, adam_constants, adam_step_coefficients


def adam_twin(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    active: torch.Tensor,
    step_size: torch.Tensor,
    coefficients: torch.Tensor,
) -> None:
    """The Triton Adam kernel's contract, run by run in float64 torch: the update of each active
    run with its own step size; inactive runs untouched."""
    one_minus_beta1, beta2, one_minus_beta2, eps, bias_correction2_sqrt = coefficients.tolist()
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        for e in range(p.shape[0]):
            if not bool(active[e]):
                continue
            m[e].lerp_(g[e], one_minus_beta1)
            v[e].mul_(beta2).addcmul_(g[e], g[e], value=one_minus_beta2)
            denom = (v[e].sqrt() / bias_correction2_sqrt).add_(eps)
            p[e].addcdiv_(m[e], denom, value=-float(step_size[e]))


ADAM_TWIN: AdamKernel = adam_twin


def _problem(runs: int) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    params = [
        torch.randn(runs, 4, 3, generator=g, dtype=torch.float64),
        torch.randn(runs, 1, 3, generator=g, dtype=torch.float64),
    ]
    # gradients as bmm hands them over: the weight's is a transposed (non-contiguous) view
    grads = [
        [
            torch.randn(runs, 3, 4, generator=g, dtype=torch.float64).transpose(1, 2),
            torch.randn(runs, 1, 3, generator=g, dtype=torch.float64),
        ]
        for _ in range(6)
    ]
    return params, grads


@pytest.mark.parametrize("kind", ["adam", "sgd", "adam-kernel"])
def test_each_run_follows_torch_optim_with_its_own_lr_and_inactive_runs_stay(kind):
    """``adam-kernel``: the optimiser driving a kernel with the Triton kernel's contract (its float64
    twin) instead of PyTorch's fused Adam."""
    kernel = ADAM_TWIN if kind == "adam-kernel" else None
    kind = kind.removesuffix("-kernel")
    runs = 4
    lrs = [0.01, 0.02, 0.01, 0.05]
    params, grads = _problem(runs)
    stacked = [p.clone() for p in params]
    optimiser = StackedOptimiser(
        stacked,
        kind=kind,
        lr=torch.tensor(lrs, dtype=torch.float64),
        momentum=torch.tensor([0.0, 0.9, 0.5, 0.0], dtype=torch.float64),
        adam_kernel=kernel,
    )
    assert optimiser.skips_inactive_runs == (kernel is not None or kind == "sgd")
    active = torch.ones(runs, dtype=torch.bool)
    frozen_after = {}
    for step, g in enumerate(grads):
        if step == 3:  # run 2 fails: NaN gradients from now on, and its weights must not move
            active[2] = False
            frozen_after = {i: p[2].clone() for i, p in enumerate(stacked)}
            g = [t.clone() for t in g]
            for t in g:
                t[2] = float("nan")
        optimiser.step(g, active)
    for e in (0, 1, 3):
        alone = [p[e].clone().requires_grad_(True) for p in params]
        if kind == "adam":
            reference: torch.optim.Optimizer = torch.optim.Adam(alone, lr=lrs[e])
        else:
            reference = torch.optim.SGD(alone, lr=lrs[e], momentum=[0.0, 0.9, 0.5, 0.0][e])
        for g in grads:
            for p, t in zip(alone, g, strict=True):
                p.grad = t[e].clone()
            reference.step()
        for p, q in zip(stacked, alone, strict=True):
            torch.testing.assert_close(p[e], q.detach(), rtol=0, atol=1e-12)
    for i, p in enumerate(stacked):
        assert torch.equal(p[2], frozen_after[i])
        assert not torch.equal(p[0], params[i][0])  # the others did move


def test_adam_step_coefficients_follow_torch_optim_adams_bias_corrections() -> None:
    lr = torch.tensor([0.01, 0.003], dtype=torch.float64)
    betas = (0.9, 0.999)
    constants = adam_constants(betas, 1e-8, torch.device("cpu"))
    for t in (1, 2, 7, 2000):
        step_size, coefficients = adam_step_coefficients(torch.tensor(float(t)), lr, betas, constants)
        assert step_size.tolist() == pytest.approx([0.01 / (1 - 0.9**t), 0.003 / (1 - 0.9**t)], rel=1e-15)
        assert coefficients[:4].tolist() == [1 - 0.9, 0.999, 1 - 0.999, 1e-8]
        assert float(coefficients[4]) == pytest.approx((1 - 0.999**t) ** 0.5, rel=1e-13)


def test_an_adam_kernel_is_refused_for_sgd_and_each_update_is_labelled() -> None:
    params = [torch.zeros(2, 3)]
    lr = torch.tensor([0.1, 0.1])
    with pytest.raises(ValueError, match="Adam kernel was given to a sgd optimiser"):
        StackedOptimiser(params, kind="sgd", lr=lr, adam_kernel=ADAM_TWIN)
    labels = [
        StackedOptimiser(params, kind="adam", lr=lr, adam_kernel=ADAM_TWIN).kernel_label,
        StackedOptimiser(params, kind="adam", lr=lr).kernel_label,
        StackedOptimiser(params, kind="sgd", lr=lr).kernel_label,
    ]
    assert labels == ["triton-adam", "torch-fused-adam", "torch-sgd"]
