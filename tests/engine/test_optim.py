"""The stacked optimiser against ``torch.optim`` applied to each run alone, in float64."""

from __future__ import annotations

import pytest
import torch

from gni_engine.optim import StackedOptimiser


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


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_each_run_follows_torch_optim_with_its_own_lr_and_inactive_runs_stay(kind):
    runs = 4
    lrs = [0.01, 0.02, 0.01, 0.05]
    params, grads = _problem(runs)
    stacked = [p.clone() for p in params]
    optimiser = StackedOptimiser(
        stacked,
        kind=kind,
        lr=torch.tensor(lrs, dtype=torch.float64),
        momentum=torch.tensor([0.0, 0.9, 0.5, 0.0], dtype=torch.float64),
    )
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
