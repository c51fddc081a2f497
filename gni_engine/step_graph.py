"""A batch's training step captured once as a CUDA graph and replayed: one launch for a few hundred.

A stacked step on a GPU is a few hundred kernels (products, the noise and activation kernels, their
backward, Adam); the host spends 10–80 µs queueing each, 7.3 ms a step for the reference sweep's
256 fp32 runs (profile of the H100 call). Once the device's share of a step falls below that — the
fused GEMM aims at it — the host bounds the throughput. A CUDA graph records the step's kernels
with their arguments (pointers and scalars) once; a replay re-launches all of them from the device.

What that asks of the step, and how :class:`gni_engine.training.BatchTrainer` keeps to it:

- every value that changes from step to step lives on the device and is updated in place (the step
  count behind the divergence flags, Adam's step, the counter-noise streams, ``active``);
- no host reads inside the step (the divergence flags are read every ``SETTLE_EVERY`` steps, outside);
- the same tensors every step: full-batch training only (minibatches are drawn on the host), noise
  from counter streams (not per-run ``torch.Generator`` s), every run still running (a step with a
  failed or cancelled run masks differently: from then on the steps run eagerly);
- the kernels chosen before capture: Triton's autotuner has run in the eager steps before it.

:class:`StepGraph` watches the storage of the tensors the step reads and writes: if any moved
(a checkpoint restored new optimiser state), the graph is dropped and captured again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps before capture (autotuning, optimiser state, cuBLAS workspaces)


class Replayable(Protocol):
    def replay(self) -> None: ...


class StepGraph:
    """Captures ``step`` (device work only: it must not read the device from the host) on the first
    :meth:`run` after :data:`WARMUP_STEPS` eager steps, and replays it after that."""

    def __init__(self, step: Callable[[], None], watched: Callable[[], Sequence[torch.Tensor]]) -> None:
        self._step = step
        self._watched = watched
        self._graph: Replayable | None = None
        self._pointers: list[int] = []
        self._eager_steps = 0
        self.replays = 0  # steps run from the graph (results record it)
        self.captures = 0
        self.failed: str | None = None  # why capture failed (the steps then run eagerly)

    def _storage(self) -> list[int]:
        return [t.untyped_storage().data_ptr() for t in self._watched()]

    def run(self, eager: Callable[[], None], undo_host_state: Callable[[], Callable[[], None]]) -> str:
        """One step: eagerly while warming up (the last warm-up step on a side stream, as capture
        wants), then captured and replayed. Returns how it ran: ``"eager"``, ``"captured"`` (the
        step's Python code ran, during the capture) or ``"replayed"`` (it did not: the caller
        advances its host-side counters itself).

        ``undo_host_state()`` snapshots what the step's Python code changes on the host and returns
        the function that restores it: a capture runs that code without running its kernels, so a
        failed capture must leave the host as it was before the eager step that replaces it.
        """
        if self.failed is not None:
            eager()
            return "eager"
        if self._graph is not None and self._storage() != self._pointers:
            log.info("step graph: tensors moved (a restored checkpoint?); capturing again")
            self._graph, self._eager_steps = None, 0
        if self._graph is not None:
            self._graph.replay()
            self.replays += 1
            return "replayed"
        if self._eager_steps < WARMUP_STEPS - 1:
            eager()
            self._eager_steps += 1
            return "eager"
        if self._eager_steps == WARMUP_STEPS - 1:
            self._on_side_stream(eager)
            self._eager_steps += 1
            return "eager"
        restore = undo_host_state()
        try:
            graph = self._capture()
        except Exception as error:  # an op that syncs or cannot be captured: keep training, eagerly
            restore()
            self.failed = f"{type(error).__name__}: {error}"
            log.warning("step graph: capture failed (%s); the steps run eagerly", self.failed)
            eager()
            return "eager"
        self._graph, self._pointers = graph, self._storage()
        self.captures += 1
        graph.replay()  # capture records the kernels without running them: this is the step
        self.replays += 1
        return "captured"

    # the two CUDA-specific steps (the tests replace them to check the bookkeeping on the CPU)
    def _on_side_stream(self, eager: Callable[[], None]) -> None:
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            eager()
        torch.cuda.current_stream().wait_stream(side)

    def _capture(self) -> Replayable:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        return graph
