"""The step graph's bookkeeping, on the CPU: a stand-in for the CUDA graph that behaves like one.

A real capture runs the step's Python code and none of its kernels; a real replay runs the kernels
and none of the Python. The stand-in does the same with the CPU: its capture runs the step and then
puts back every tensor the trainer declares the step to touch (so an undeclared one would show as
a difference from eager training), and its replay runs the step with the host's counters put back
afterwards. What only a card can show (the captured kernels and their baked-in arguments) is
checked by ``benchmarks/gpu_checks.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from gni_engine.spec import RunSpec, parse_run_spec
from gni_engine.step_graph import WARMUP_STEPS, Replayable, StepGraph
from gni_engine.training import BatchTrainer


class _Replay:
    def __init__(self, step: Callable[[], None], host_state: Callable[[], Callable[[], None]]) -> None:
        self.step, self.host_state = step, host_state

    def replay(self) -> None:
        restore = self.host_state()
        self.step()
        restore()  # a replay runs no Python: the host's counters are the caller's to advance


class CpuStandIn(StepGraph):
    def __init__(self, trainer: BatchTrainer) -> None:
        super().__init__(lambda: trainer._step_work(graphed=True), trainer._graph_tensors)
        self.trainer = trainer
        self.side_stream_steps = 0

    def _on_side_stream(self, eager: Callable[[], None]) -> None:
        self.side_stream_steps += 1
        eager()

    def _capture(self) -> Replayable:
        before = [t.detach().clone() for t in self._watched()]
        self._step()  # the Python runs (its host effects stay), the "kernels" are undone:
        with torch.no_grad():
            for t, saved in zip(self._watched(), before, strict=True):
                t.copy_(saved)
        return _Replay(self._step, self.trainer.optimiser.host_state_snapshot)


def _spec(mode: str, kind: str, seed: int, activation: str = "relu", **training: Any) -> RunSpec:
    return parse_run_spec(
        {
            "data": {"name": "sinusoids", "n_points": 40, "frequencies": [1.0, 3.0]},
            "model": {"hidden": [12, 8], "activation": activation},
            "noise": {"sigma": 0.2, "kind": kind},
            "training": {"steps": 12, "lr": 0.01, "mode": mode, **training},
            "analyses": {"record_every": 6, "noise_gap_samples": 0},
            "execution": {"precision": "fp64"},
            "seed": seed,
        }
    )


def _trainer(specs: list[RunSpec], graphed: bool) -> BatchTrainer:
    trainer = BatchTrainer(specs, noise_stream="counter")
    trainer.settle_every = 16  # the GPU's cadence: flags read outside the step
    if graphed:
        trainer.step_graph = CpuStandIn(trainer)
    return trainer


@pytest.mark.parametrize(
    "specs",
    [
        [_spec("gni", "additive", 0), _spec("gni", "multiplicative", 1), _spec("explicit", "additive", 2)],
        [
            _spec("gni", "additive", 3, optimizer="sgd", momentum=0.9),
            _spec("baseline", "additive", 4, optimizer="sgd"),
        ],
        [_spec("explicit", "multiplicative", 5), _spec("baseline", "additive", 6)],  # hand-written gradient
        [_spec("gni", "additive", 7, lr=0.01), _spec("gni", "additive", 8, lr=0.003)],  # two Adam groups
    ],
    ids=["adam-mixed", "sgd", "explicit-hand-gradient", "two-learning-rates"],
)
def test_replayed_steps_train_exactly_like_eager_steps(specs: list[RunSpec]) -> None:
    eager, graphed = _trainer(specs, False), _trainer(specs, True)
    eager_states, graphed_states = eager.run(), graphed.run()
    assert isinstance(graphed.step_graph, CpuStandIn)
    assert graphed.step_graph.captures == 1 and graphed.step_graph.side_stream_steps == 1
    assert graphed_states[0].summary["graph_replayed_steps"] == 12 - WARMUP_STEPS
    assert eager_states[0].summary["graph_replayed_steps"] == 0
    assert graphed.optimiser.step_count == eager.optimiser.step_count == 12
    for mine, theirs in zip(graphed_states, eager_states, strict=True):
        assert mine.status == theirs.status == "succeeded"
        for k, w in theirs.weights.items():
            assert torch.equal(mine.weights[k], w), k
        assert [(r.step, r.name, r.value) for r in mine.metrics] == [
            (r.step, r.name, r.value) for r in theirs.metrics
        ]


def test_moved_tensors_are_captured_again_and_a_failed_run_ends_the_replays() -> None:
    specs = [_spec("gni", "additive", 0), _spec("gni", "additive", 1)]
    eager, graphed = _trainer(specs, False), _trainer(specs, True)
    for _ in range(6):
        eager.train_step()
        graphed.train_step()
    # what restoring a checkpoint does: new optimiser state tensors, same values
    graphed.optimiser.state = [{k: v.clone() for k, v in s.items()} for s in graphed.optimiser.state]
    for _ in range(6):
        eager.train_step()
        graphed.train_step()
    stand_in = graphed.step_graph
    assert isinstance(stand_in, CpuStandIn)
    assert stand_in.captures == 2
    for mine, theirs in zip(graphed.net.parameters(), eager.net.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    replays = stand_in.replays
    graphed._fail(1, "failed for the test", graphed.step)  # the captured masks no longer hold
    graphed.train_step()
    assert stand_in.replays == replays


def test_a_capture_that_fails_leaves_the_host_as_it_was_and_trains_eagerly() -> None:
    specs = [_spec("gni", "additive", 0), _spec("gni", "multiplicative", 1)]
    eager, graphed = _trainer(specs, False), _trainer(specs, True)

    class Refuses(CpuStandIn):
        def _capture(self) -> Replayable:
            self._step()  # its Python ran (the optimiser counted a step) before the failure
            raise RuntimeError("operation not permitted when stream is capturing")

    graphed.step_graph = Refuses(graphed)
    for _ in range(8):
        eager.train_step()
        graphed.train_step()
    assert graphed.step_graph.failed == "RuntimeError: operation not permitted when stream is capturing"
    assert graphed.step_graph.replays == 0
    assert graphed.optimiser.step_count == eager.optimiser.step_count == 8


def test_a_cuda_graph_is_refused_by_name_where_it_cannot_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    minibatch = _spec("gni", "additive", 0, batch_size=8)
    with pytest.raises(ValueError, match=r"the device is cpu, not CUDA; minibatches are drawn on the host"):
        BatchTrainer([minibatch], cuda_graph="on")
    with pytest.raises(ValueError, match="per-run torch.Generators"):
        BatchTrainer([_spec("gni", "additive", 0)], noise_stream="generator", cuda_graph="on")
    monkeypatch.setenv("GNI_CUDA_GRAPH", "1")
    with pytest.raises(ValueError, match="GNI_CUDA_GRAPH: expected one of 'off', 'on', got '1'"):
        BatchTrainer([minibatch])


def test_a_run_diverging_during_replays_fails_at_its_own_step_as_in_eager_training() -> None:
    specs = [
        _spec("gni", "additive", 0, "linear", optimizer="sgd"),
        _spec("gni", "additive", 1, "linear", optimizer="sgd", lr=3.0),  # diverges at step 6
    ]
    eager_states = _trainer(specs, False).run()
    graphed = _trainer(specs, True)
    graphed_states = graphed.run()
    failed = eager_states[1].failed_step
    assert failed is not None and failed > WARMUP_STEPS  # it diverged while the graph was replaying
    assert graphed_states[1].status == "failed" and graphed_states[1].failed_step == failed
    assert graphed_states[1].error == eager_states[1].error
    for k, w in eager_states[0].weights.items():
        assert torch.equal(graphed_states[0].weights[k], w)
