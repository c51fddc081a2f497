"""Two checkpoint slots per run: a worker that dies half-way through saving a batch still leaves a
step that every run of the batch can resume from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gni_engine.checkpoint import run_checkpoint
from gni_engine.execution import latest_common
from gni_engine.spec import parse_run_spec
from gni_engine.training import BatchTrainer
from gni_service.executor.checkpoints import StoredCheckpoints, checkpoint_key
from gni_service.executor.claims import ClaimedRun
from gni_service.storage import LocalArtifactStore, StorageError

SPEC: dict[str, Any] = {
    "data": {"name": "sinusoids", "n_points": 16, "frequencies": [1.0, 2.0]},
    "model": {"hidden": [4]},
    "noise": {"sigma": 0.1},
    "training": {"steps": 40},
}


def _stored(store: Any, tmp_path: Path, attempt: int, started: list[Any]) -> StoredCheckpoints:
    runs = [ClaimedRun(f"run_{i}", "exp_1", i, attempt, {}) for i in range(2)]
    return StoredCheckpoints(
        store,
        runs,
        tmp_path / "scratch",
        every=10,
        min_interval_s=0.0,
        on_started=lambda index, checkpoint: started.append((index, checkpoint and checkpoint["step"])),
    )


SPECS = [parse_run_spec({**SPEC, "seed": s}) for s in range(2)]


def _trainer_at(step: int) -> BatchTrainer:
    trainer = BatchTrainer(SPECS)
    while trainer.step < step:
        trainer.train_step()
    return trainer


def test_a_crash_half_way_through_a_save_resumes_from_the_previous_step(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    first = _stored(store, tmp_path, 1, [])
    at_10, at_20 = _trainer_at(10), _trainer_at(20)
    first.save({0: run_checkpoint(at_10, 0), 1: run_checkpoint(at_10, 1)})  # slot 0
    first.save({0: run_checkpoint(at_20, 0)})  # slot 1, run 0 only: the worker died before run 1
    assert (tmp_path / "store" / checkpoint_key("run_0", 1)).exists()
    assert not (tmp_path / "store" / checkpoint_key("run_1", 1)).exists()

    started: list[Any] = []
    second = _stored(store, tmp_path, 2, started)
    stored = [second.load(0), second.load(1)]
    assert sorted(c["step"] for c in stored[0]) == [10, 20] and [c["step"] for c in stored[1]] == [10]
    chosen = latest_common(stored, SPECS)
    assert [c and c["step"] for c in chosen] == [10, 10]
    for index, checkpoint in enumerate(chosen):
        second.started(index, checkpoint)
    assert started == [(0, 10), (1, 10)]
    # the next save must not overwrite the step-10 checkpoints it resumed from
    second.save({0: run_checkpoint(at_20, 0), 1: run_checkpoint(at_20, 1)})
    third = _stored(store, tmp_path, 3, [])
    assert sorted(c["step"] for c in third.load(0)) == [10, 20]
    assert sorted(c["step"] for c in third.load(1)) == [10, 20]
    weights = third.load(1)
    assert any(torch.equal(c["weights"]["0"], run_checkpoint(at_20, 1)["weights"]["0"]) for c in weights)

    third.discard(["run_0", "run_1"])
    assert not list((tmp_path / "store" / "checkpoints").glob("*.safetensors"))


def test_a_first_claim_reads_nothing(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    assert _stored(store, tmp_path, 1, []).load(0) == []


class _FailingPuts:
    """A store whose uploads of the listed keys fail (once each)."""

    def __init__(self, store: LocalArtifactStore, failing: set[str]) -> None:
        self.store, self.failing = store, failing

    def put_file(self, key: str, source: Path, content_type: str) -> Any:
        if key in self.failing:
            self.failing.discard(key)
            raise StorageError(f"simulated outage writing {key}")
        return self.store.put_file(key, source, content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_failed_upload_does_not_cost_the_previous_step(tmp_path: Path) -> None:
    """Step 20's upload fails for run 1; the worker then dies half-way through saving step 30."""
    store = LocalArtifactStore(tmp_path / "store")
    flaky = _FailingPuts(store, {checkpoint_key("run_1", 1)})
    first = _stored(flaky, tmp_path, 1, [])
    at = {step: _trainer_at(step) for step in (10, 20, 30)}
    first.save({i: run_checkpoint(at[10], i) for i in range(2)})
    first.save({i: run_checkpoint(at[20], i) for i in range(2)})  # run 1's write fails
    first.save({0: run_checkpoint(at[30], 0)})  # dies before run 1's
    second = _stored(store, tmp_path, 2, [])
    chosen = latest_common([second.load(0), second.load(1)], SPECS)
    assert [c and c["step"] for c in chosen] == [10, 10]
