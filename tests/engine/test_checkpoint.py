"""Resuming from a checkpoint continues exactly as an uninterrupted run."""

from __future__ import annotations

import torch

from gni_engine.checkpoint import load_checkpoint, restore, run_checkpoint, save_checkpoint
from gni_engine.spec import parse_run_spec
from gni_engine.training import BatchTrainer


def _specs():
    base = {
        "task": "classification",
        "data": {"name": "two_moons", "n_points": 64},
        "model": {"hidden": [8, 8], "activation": "tanh"},
        "noise": {"sigma": 0.2},
        "training": {"steps": 30, "batch_size": 24},
        "analyses": {"record_every": 5, "noise_gap_samples": 3},
    }
    return [
        parse_run_spec({**base, "training": {**base["training"], "mode": m}, "seed": s})
        for m, s in (("gni", 0), ("explicit", 1), ("baseline", 2))
    ]


def test_resume_is_bit_identical(tmp_path):
    specs = _specs()
    uninterrupted = BatchTrainer(specs).run()

    first = BatchTrainer(specs)
    while first.step < 13:  # stop mid-epoch, off the record grid
        first.train_step()
        if first.step % 5 == 0:
            first.record()
    paths = []
    for e in range(len(specs)):
        path = tmp_path / f"run{e}.safetensors"
        save_checkpoint(run_checkpoint(first, e), path)
        paths.append(path)

    resumed = BatchTrainer(specs)
    restore(resumed, [load_checkpoint(p) for p in paths])
    states = resumed.run()
    for a, b in zip(uninterrupted, states, strict=True):
        for k in a.weights:
            assert torch.equal(a.weights[k], b.weights[k])
        assert a.summary["noise_gap"] == b.summary["noise_gap"]
        assert [(r.step, r.name, r.value) for r in a.metrics if r.step > 0] == [
            (r.step, r.name, r.value) for r in b.metrics if r.step > 0
        ]


def test_a_checkpoint_of_other_code_is_not_resumed():
    from gni_engine import __version__
    from gni_engine.execution import resumable
    from gni_engine.provenance import engine_fingerprint

    specs = _specs()[:1]
    trainer = BatchTrainer(specs)
    trainer.train_step()
    checkpoint = run_checkpoint(trainer, 0)
    assert (checkpoint["engine_version"], checkpoint["engine_fingerprint"]) == (
        __version__,
        engine_fingerprint(),
    )
    assert resumable([checkpoint], specs)
    assert not resumable([{**checkpoint, "engine_version": "0.0.1"}], specs)
    assert not resumable([{**checkpoint, "engine_fingerprint": "0" * 16}], specs)  # edited, same version
    assert not resumable([{k: v for k, v in checkpoint.items() if k != "engine_fingerprint"}], specs)
