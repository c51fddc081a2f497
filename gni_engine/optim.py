"""SGD and Adam over stacked parameters, with a learning rate per run.

The update of run e is that of ``torch.optim.SGD`` / ``torch.optim.Adam`` applied to run e alone, so
a stacked batch and one-at-a-time training agree to rounding. Runs whose ``active`` flag is off are
left untouched. Adam runs as PyTorch's fused kernel (the one behind ``Adam(fused=True)``): one pass
over each parameter instead of some ten elementwise ops, which were a quarter of a stacked CPU step.
Its learning rate is one number per call, so runs are grouped by learning rate (usually one group).
On CUDA, Adam runs by default as :mod:`gni_engine.stacked_adam_triton`'s kernel instead (passed in as
``adam_kernel``): a learning rate per run and the runs' ``active`` flags read on the device, so a
failed run is skipped without a pass to zero its gradients and without the host reading the flags.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

# :func:`gni_engine.stacked_adam_triton.adam_step_gpu`'s signature: params, grads, exp_avgs,
# exp_avg_sqs, active (E,), per-run step sizes (E,), coefficients (5,)
AdamKernel = Callable[
    [
        Sequence[torch.Tensor],
        Sequence[torch.Tensor],
        Sequence[torch.Tensor],
        Sequence[torch.Tensor],
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
    ],
    None,
]


def adam_constants(betas: tuple[float, float], eps: float, device: torch.device) -> torch.Tensor:
    """[1 − β₁, β₂, 1 − β₂, ε] in float64 on ``device``: made once (a copy from the host), not per step."""
    beta1, beta2 = betas
    return torch.tensor([1.0 - beta1, beta2, 1.0 - beta2, eps], dtype=torch.float64, device=device)


def adam_step_coefficients(
    step: torch.Tensor, lr: torch.Tensor, betas: tuple[float, float], constants: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-run step sizes lr / (1 − β₁ᵗ), (E,); ``constants`` followed by √(1 − β₂ᵗ), (5,)), float64
    on the device, from the device's step count ``step`` (0-dim): no host value enters, so a captured
    graph's replays follow the count."""
    beta1, beta2 = betas
    t = step.to(torch.float64)
    step_size = lr.to(torch.float64) / (1.0 - torch.pow(beta1, t))
    bias_correction2_sqrt = (1.0 - torch.pow(beta2, t)).sqrt()
    return step_size, torch.cat([constants, bias_correction2_sqrt.reshape(1)])


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
        adam_kernel: AdamKernel | None = None,
    ) -> None:
        """``adam_kernel``: Adam's update as one kernel with a learning rate per run that leaves
        inactive runs untouched (:func:`gni_engine.stacked_adam_triton.adam_step_gpu`); ``None``:
        PyTorch's fused Adam, grouped by learning rate."""
        if adam_kernel is not None and kind != "adam":
            raise ValueError(f"an Adam kernel was given to a {kind} optimiser")
        self.adam_kernel = adam_kernel
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
        self._adam_constants: torch.Tensor | None = None  # the Adam kernel's, on the device

    @property
    def skips_inactive_runs(self) -> bool:
        """Whether an update reads the runs' ``active`` flags on the device and leaves the inactive
        ones' weights untouched whatever their gradients (no zeroing needed, no flags read by the
        host): SGD and the Adam kernel; PyTorch's fused Adam updates every value it is given."""
        return self.kind == "sgd" or self.adam_kernel is not None

    @property
    def kernel_label(self) -> str:
        """What results record as ``optimiser_kernel``."""
        if self.kind != "adam":
            return f"torch-{self.kind}"
        return "triton-adam" if self.adam_kernel is not None else "torch-fused-adam"

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
        if self.adam_kernel is not None:
            tensors.append(self.lr)  # read on the device by the kernel's step sizes
        extra = (self._step_tensor, self._adam_constants)
        return tensors + [t for t in extra if t is not None]

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

        ``all_active``: the caller's word that every run is active, which spares PyTorch's fused
        Adam reading ``active`` back from the device (a GPU pipeline stall) to group the runs; SGD and
        the Adam kernel read the flags on the device and need no word.
        """
        self.step_count += 1
        if self.adam_kernel is not None:  # reads ``active`` on the device
            self._kernel_adam(grads, active)
            return
        if self.kind == "adam":
            if all_active is None:
                all_active = bool(active.all())
            self._fused_adam(grads, active, all_active)
            return
        for p, g, state in zip(self.params, grads, self.state, strict=True):
            # masked on the device whatever the host believes: a run that failed since the host last
            # read the flags keeps its NaNs out of its momentum and its weights where they were
            mask = active.reshape((-1,) + (1,) * (p.dim() - 1))
            self._sgd(p, torch.where(mask, g, torch.zeros_like(g)), state, mask)

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

    def _adam_state(self) -> torch.Tensor:
        """Creates the moments on first use, advances the device's step count and returns it."""
        for state, p in zip(self.state, self.params, strict=True):
            if not state:
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        # the step count lives on the device: building it from a Python number each step would be a
        # blocking host-to-device copy on a GPU
        if self._step_tensor is not None and self._step_on_device == self.step_count - 1:
            self._step_tensor.add_(1.0)
        else:
            self._step_tensor = torch.tensor(float(self.step_count), device=self.params[0].device)
        self._step_on_device = self.step_count
        return self._step_tensor

    def _kernel_adam(self, grads: Sequence[torch.Tensor], active: torch.Tensor) -> None:
        assert self.adam_kernel is not None
        step = self._adam_state()
        if self._adam_constants is None:
            self._adam_constants = adam_constants(self.betas, self.eps, self.params[0].device)
        step_size, coefficients = adam_step_coefficients(step, self.lr, self.betas, self._adam_constants)
        self.adam_kernel(
            self.params,
            grads,
            [s["exp_avg"] for s in self.state],
            [s["exp_avg_sq"] for s in self.state],
            active,
            step_size,
            coefficients,
        )

    def _fused_adam(self, grads: Sequence[torch.Tensor], active: torch.Tensor, all_active: bool) -> None:
        step = self._adam_state()
        beta1, beta2 = self.betas
        # the fused kernel walks memory in order: a transposed gradient (from bmm) must be made dense
        grads = [g.contiguous() for g in grads]
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
        self, p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor], mask: torch.Tensor
    ) -> None:
        momentum = self._per_run("momentum", self.momentum, p)
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = g.clone()
        else:
            state["momentum_buffer"].mul_(momentum).add_(g)
        buf = state["momentum_buffer"]
        direction = torch.where(momentum != 0, buf, g)
        update = direction * -self._per_run("lr", self.lr, p)
        p.add_(torch.where(mask, update, torch.zeros_like(update)))

    def state_dict(self) -> dict[str, object]:
        return {"step_count": self.step_count, "state": [dict(s) for s in self.state]}

    def load_state_dict(self, data: dict[str, object]) -> None:
        step_count = data["step_count"]
        state = data["state"]
        assert isinstance(step_count, int) and isinstance(state, list)
        self.step_count = step_count
        self.state = [dict(s) for s in state]
