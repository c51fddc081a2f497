"""SGD and Adam over stacked parameters, with a learning rate per run.

The update of run e is that of ``torch.optim.SGD`` / ``torch.optim.Adam`` applied to run e alone, so
a stacked batch and one-at-a-time training agree to rounding. Runs whose ``active`` flag is off are
left untouched. Adam runs as PyTorch's fused kernel (the one behind ``Adam(fused=True)``): one pass
over each parameter instead of some ten elementwise ops, which were a quarter of a stacked CPU step.
Its learning rate is one number per call, so runs are grouped by learning rate (usually one group).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
        self._lr_values: list[float] | None = None
        self._step_tensor: torch.Tensor | None = None  # Adam's step count on the device …
        self._step_on_device = 0  # … and the count it holds

    def count_replayed_step(self) -> None:
        """The host's share of a step replayed from a CUDA graph: the device ran the update (and
        advanced Adam's step count in place); the host's counters follow."""
        self.step_count += 1
        self._step_on_device += 1

    def host_state_snapshot(self) -> Callable[[], None]:
        """Undo for what :meth:`step`'s Python code changes on the host (its counters)."""
        counts = (self.step_count, self._step_on_device)

        def restore() -> None:
            self.step_count, self._step_on_device = counts

        return restore

    def device_state(self) -> list[torch.Tensor]:
        """The device tensors an update reads or writes besides the parameters and gradients."""
        tensors = [t for state in self.state for t in state.values()]
        return tensors + ([self._step_tensor] if self._step_tensor is not None else [])

    def _per_run(self, name: str, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``values`` (E,) shaped to broadcast over ``like`` and in its dtype, cached per shape."""
        key = (name, like.dim())
        if key not in self._views:
            self._views[key] = values.reshape((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)
        return self._views[key]

    @torch.no_grad()
    def step(
        self, grads: Sequence[torch.Tensor], active: torch.Tensor, *, all_active: bool | None = None
    ) -> None:
        """One update; ``active`` (E,) bool. Gradients of inactive runs are ignored (they may be NaN).

        ``all_active``: the caller's word that every run is active, which spares reading ``active``
        back from the device (a GPU pipeline stall).
        """
        self.step_count += 1
        if all_active is None:
            all_active = bool(active.all())
        if self.kind == "adam":
            self._fused_adam(grads, active, all_active)
            return
        for p, g, state in zip(self.params, grads, self.state, strict=True):
            mask = None
            if not all_active:  # rare: a run failed or was cancelled; keep its NaNs out of the update
                mask = active.reshape((-1,) + (1,) * (p.dim() - 1))
                g = torch.where(mask, g, torch.zeros_like(g))
            self._sgd(p, g, state, mask)

    def _lr_groups(self, active: torch.Tensor, all_active: bool) -> list[tuple[float, list[int] | None]]:
        """(learning rate, runs) pairs covering the active runs; ``None`` means every run."""
        if self._lr_values is None:
            self._lr_values = [float(v) for v in self.lr.tolist()]
        values = self._lr_values
        if all_active and len(set(values)) == 1:
            return [(values[0], None)]
        flags: list[bool] = [True] * len(values) if all_active else active.tolist()  # no read when all run
        groups: dict[float, list[int]] = {}
        for e, (value, on) in enumerate(zip(values, flags, strict=True)):
            if on:
                groups.setdefault(value, []).append(e)
        return list(groups.items())

    def _fused_adam(self, grads: Sequence[torch.Tensor], active: torch.Tensor, all_active: bool) -> None:
        for state, p in zip(self.state, self.params, strict=True):
            if not state:
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        beta1, beta2 = self.betas
        # the fused kernel walks memory in order: a transposed gradient (from bmm) must be made dense
        grads = [g.contiguous() for g in grads]
        # the step count lives on the device: building it from a Python number each step would be a
        # blocking host-to-device copy on a GPU
        if self._step_tensor is not None and self._step_on_device == self.step_count - 1:
            self._step_tensor.add_(1.0)
        else:
            self._step_tensor = torch.tensor(float(self.step_count), device=self.params[0].device)
        self._step_on_device = self.step_count
        step = self._step_tensor
        for lr, runs in self._lr_groups(active, all_active):

            def pick(tensors: Sequence[torch.Tensor], runs: list[int] | None = runs) -> list[torch.Tensor]:
                return list(tensors) if runs is None else [t[e] for t in tensors for e in runs]

            params = pick(self.params)
            torch._fused_adam_(
                params,
                pick(grads),
                pick([s["exp_avg"] for s in self.state]),
                pick([s["exp_avg_sq"] for s in self.state]),
                [],
                [step] * len(params),
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=0.0,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
            )

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
