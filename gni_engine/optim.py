"""SGD and Adam over stacked parameters, with a learning rate per run.

The update of run e is exactly that of ``torch.optim.SGD`` / ``torch.optim.Adam`` (single-tensor
form, same operation order) applied to run e alone, so a stacked batch and one-at-a-time training
agree to rounding. Runs whose ``active`` flag is off are left untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class StackedOptimiser:
    """Adam (β = 0.9, 0.999, ε = 1e-8) or SGD with momentum over tensors whose first dim is the run."""

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        *,
        kind: str,
        lr: torch.Tensor,  # (E,)
        momentum: torch.Tensor | None = None,  # (E,), SGD only
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.kind = kind
        self.lr = lr
        self.momentum = momentum if momentum is not None else torch.zeros_like(lr)
        self.betas = betas
        self.eps = eps
        self.step_count = 0
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.params]
        self._views: dict[tuple[str, int], torch.Tensor] = {}

    def _per_run(self, name: str, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``values`` (E,) shaped to broadcast over ``like`` and in its dtype, cached per shape."""
        key = (name, like.dim())
        if key not in self._views:
            self._views[key] = values.reshape((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)
        return self._views[key]

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], active: torch.Tensor) -> None:
        """One update; ``active`` (E,) bool. Gradients of inactive runs are ignored (they may be NaN)."""
        self.step_count += 1
        all_active = bool(active.all())
        for p, g, state in zip(self.params, grads, self.state, strict=True):
            mask = None
            if not all_active:  # rare: a run failed or was cancelled; keep its NaNs out of the update
                mask = active.reshape((-1,) + (1,) * (p.dim() - 1))
                g = torch.where(mask, g, torch.zeros_like(g))
            if self.kind == "adam":
                self._adam(p, g, state, mask)
            else:
                self._sgd(p, g, state, mask)

    def _adam(
        self, p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor], mask: torch.Tensor | None
    ) -> None:
        beta1, beta2 = self.betas
        if not state:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1**self.step_count
        bias_correction2 = 1 - beta2**self.step_count
        step_size = self._per_run("lr", self.lr, p) / bias_correction1
        denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(self.eps)
        update = (exp_avg / denom) * -step_size
        p.add_(update if mask is None else torch.where(mask, update, torch.zeros_like(update)))

    def _sgd(
        self, p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor], mask: torch.Tensor | None
    ) -> None:
        momentum = self._per_run("momentum", self.momentum, p)
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = g.clone()
        else:
            state["momentum_buffer"].mul_(momentum).add_(g)
        buf = state["momentum_buffer"]
        direction = torch.where(momentum != 0, buf, g)
        update = direction * -self._per_run("lr", self.lr, p)
        p.add_(update if mask is None else torch.where(mask, update, torch.zeros_like(update)))

    def state_dict(self) -> dict[str, object]:
        return {"step_count": self.step_count, "state": [dict(s) for s in self.state]}

    def load_state_dict(self, data: dict[str, object]) -> None:
        step_count = data["step_count"]
        state = data["state"]
        assert isinstance(step_count, int) and isinstance(state, list)
        self.step_count = step_count
        self.state = [dict(s) for s in state]
