"""Analyses of a stacked batch equal the same analyses run one network at a time."""

from __future__ import annotations

import torch

from gni_engine.analyses.recorders import (
    ClassificationRecorder,
    FourierCheckRecorder,
    LayerNormRecorder,
    SpectralRecorder,
)
from gni_engine.data import build_dataset
from gni_engine.networks import build_network
from gni_engine.noise import NoiseScales
from gni_engine.recording import RecordContext
from gni_engine.seeding import make_generator
from gni_engine.spec import RunSpec
from gni_engine.stacked import stack_networks


def _context(specs, net_indices=None):
    data = [build_dataset(s, dtype=torch.float64) for s in specs]
    nets = [
        build_network(
            s,
            data[0].input_shape,
            data[0].n_outputs,
            generator=make_generator(s.seed, "init"),
            dtype=torch.float64,
        )
        for s in specs
    ]
    net = stack_networks(nets, requires_grad=False)
    return RecordContext(
        specs=specs,
        datasets=data,
        net=net,
        loss=specs[0].loss,
        x_train=torch.stack([d.x_train for d in data]),
        y_train=torch.stack([d.y_train for d in data]),
        x_test=torch.stack([d.x_test for d in data]),
        y_test=torch.stack([d.y_test for d in data]),
        scales=NoiseScales.from_sigmas(
            [s.injection_sigmas() for s in specs],
            ["additive"] * len(specs),
            dtype=torch.float64,
            device=torch.device("cpu"),
        ),
        generators=[make_generator(s.seed, "analysis") for s in specs],
        step=0,
        final=True,
    )


def _assert_same(stacked, alone):
    assert stacked.keys() == alone.keys()
    for key, value in stacked.items():
        if isinstance(value, float):
            assert abs(value - alone[key]) <= 1e-9 * max(1.0, abs(value)), key
        elif isinstance(value, dict) and key == "spectrum_final":
            assert all(abs(value[k] - alone[key][k]) < 1e-9 for k in value)


def test_regression_analyses_stacked_equal_one_at_a_time():
    specs = [
        RunSpec.model_validate(
            {"data": {"n_points": 64, "frequencies": [2.0, 9.0]}, "model": {"hidden": [8, 8, 8]}, "seed": s}
        )
        for s in range(3)
    ]
    recorders = [SpectralRecorder(), FourierCheckRecorder(), LayerNormRecorder()]
    stacked = [r.summarise(_context(specs)) for r in recorders]
    for e, spec in enumerate(specs):
        for r, rows in zip(recorders, stacked, strict=True):
            _assert_same(rows[e], r.summarise(_context([spec]))[0])


def test_classification_analyses_stacked_equal_one_at_a_time():
    base = {
        "task": "classification",
        "data": {"name": "two_moons", "n_points": 64},
        "model": {"hidden": [6, 6], "activation": "elu"},
    }
    specs = [RunSpec.model_validate({**base, "seed": s}) for s in range(3)]
    stacked = ClassificationRecorder().summarise(_context(specs))
    for e, spec in enumerate(specs):
        alone = ClassificationRecorder().summarise(_context([spec]))[0]
        for key in ("ece", "nll", "accuracy", "margin_q50", "input_margin_q10", "input_margin_q90"):
            assert abs(stacked[e][key] - alone[key]) < 1e-9, key
        assert stacked[e]["reliability"]["counts"] == alone["reliability"]["counts"]


def test_recorders_skip_runs_they_do_not_apply_to():
    spec = RunSpec.model_validate(
        {"task": "classification", "data": {"name": "two_moons", "n_points": 32}, "model": {"hidden": [4]}}
    )
    ctx = _context([spec])
    assert SpectralRecorder().record(ctx) == [[]]
    assert FourierCheckRecorder().summarise(ctx) == [{}]
    assert LayerNormRecorder().record(ctx) == [[]]  # one hidden layer: no hidden-to-hidden map
