"""Sinusoids, two moons and circles: values against closed forms and scikit-learn, determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_circles, make_moons

from gni_engine.data import build_dataset, input_output_dims
from gni_engine.data.synthetic import circles_points, moons_points
from gni_engine.spec import RunSpec


def regression(data: dict[str, object], **extra: object) -> RunSpec:
    return RunSpec.model_validate({"task": "regression", "data": {"name": "sinusoids", **data}, **extra})


def classification(data: dict[str, object], **extra: object) -> RunSpec:
    return RunSpec.model_validate({"task": "classification", "data": data, **extra})


def test_sinusoid_values_equal_the_closed_form_on_the_grid() -> None:
    spec = regression(
        {"n_points": 16, "frequencies": [2.0, 5.0], "amplitudes": [1.5, -0.5], "phases": [0.3, 1.1]}
    )
    data = build_dataset(spec, dtype=torch.float64)
    expected = [
        1.5 * math.sin(4 * math.pi * i / 16 + 0.3) - 0.5 * math.sin(10 * math.pi * i / 16 + 1.1)
        for i in range(16)
    ]
    assert data.x_train[:, 0].tolist() == [i / 16 for i in range(16)]
    np.testing.assert_allclose(data.y_train[:, 0].numpy(), expected, rtol=0, atol=1e-13)
    assert data.x_test.shape == (0, 1) and data.y_test.shape == (0, 1)
    assert data.meta["phases"] == [0.3, 1.1] and data.meta["amplitudes"] == [1.5, -0.5]
    assert data.meta["grid"] == "uniform" and data.meta["grid_spacing"] == 1 / 16


def test_zero_phases_and_default_amplitudes() -> None:
    data = build_dataset(
        regression({"n_points": 8, "frequencies": [1.0, 2.0], "phases": "zero"}), dtype=torch.float64
    )
    # t = 1/8: sin(π/4) + sin(π/2)
    assert data.y_train[0, 0].item() == 0.0
    assert data.y_train[1, 0].item() == pytest.approx(math.sqrt(0.5) + 1.0, abs=1e-15)
    assert data.meta["amplitudes"] == [1.0, 1.0] and data.meta["phases"] == [0.0, 0.0]


def test_random_phases_follow_the_data_seed_only() -> None:
    base = regression({"n_points": 32, "frequencies": [1.0, 3.0, 7.0]}, seed=5)
    first, again = build_dataset(base), build_dataset(base)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_train, again.y_train)
    phases = first.meta["phases"]
    assert all(0.0 <= p < 2 * math.pi for p in phases) and len(set(phases)) == 3
    other = build_dataset(base.model_copy(update={"seed": 6}))
    assert other.meta["phases"] != phases
    assert not torch.equal(other.y_train, first.y_train)
    # data_seed overrides seed; model, noise and training do not touch the data
    pinned = regression(
        {"n_points": 32, "frequencies": [1.0, 3.0, 7.0]},
        seed=99,
        data_seed=5,
        noise={"sigma": 0.5},
        training={"mode": "baseline", "lr": 0.1},
        model={"hidden": [8]},
    )
    assert torch.equal(build_dataset(pinned).y_train, first.y_train)
    # the y values are the closed form with the recorded phases
    t = torch.arange(32, dtype=torch.float64) / 32
    y = sum(torch.sin(2 * math.pi * k * t + p) for k, p in zip((1.0, 3.0, 7.0), phases, strict=True))
    np.testing.assert_allclose(first.y_train[:, 0].numpy(), y.numpy(), atol=1e-6)


def test_held_out_grid_points_leave_train_in_grid_order() -> None:
    spec = regression({"n_points": 40, "frequencies": [3.0], "phases": "zero", "test_fraction": 0.25})
    data = build_dataset(spec, dtype=torch.float64)
    train_t, test_t = data.x_train[:, 0], data.x_test[:, 0]
    assert len(train_t) == 30 and len(test_t) == 10
    assert bool((train_t[1:] > train_t[:-1]).all())
    assert sorted((train_t * 40).round().long().tolist() + (test_t * 40).round().long().tolist()) == list(
        range(40)
    )
    np.testing.assert_allclose(data.y_test[:, 0].numpy(), torch.sin(6 * math.pi * test_t).numpy(), atol=1e-13)
    assert data.meta["n_train"] == 30 and data.meta["n_test"] == 10


def test_multidimensional_sinusoids_run_along_unit_directions() -> None:
    spec = regression({"n_points": 50, "dim": 3, "frequencies": [1.0, 4.0], "amplitudes": [2.0, 0.5]}, seed=3)
    data = build_dataset(spec, dtype=torch.float64)
    u = np.array(data.meta["directions"])
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), [1.0, 1.0], atol=1e-15)
    x = data.x_train.numpy()
    assert x.shape == (50, 3) and x.min() >= 0.0 and x.max() < 1.0
    phases = data.meta["phases"]
    expected = 2.0 * np.sin(2 * np.pi * 1.0 * x @ u[0] + phases[0]) + 0.5 * np.sin(
        2 * np.pi * 4.0 * x @ u[1] + phases[1]
    )
    np.testing.assert_allclose(data.y_train[:, 0].numpy(), expected, atol=1e-13)
    assert data.meta["grid"] == "random_uniform"


def test_precision_changes_only_the_rounding() -> None:
    spec = regression({"n_points": 200})
    single, double = build_dataset(spec, dtype=torch.float32), build_dataset(spec, dtype=torch.float64)
    assert single.y_train.dtype == torch.float32
    assert torch.equal(single.y_train, double.y_train.to(torch.float32))


def test_moons_and_circles_match_scikit_learn_geometry() -> None:
    x, y = moons_points(11, 0.0, seed=0)
    ref_x, ref_y = make_moons(11, shuffle=False, noise=None)
    np.testing.assert_allclose(x.numpy(), ref_x, atol=1e-14)
    assert y.tolist() == ref_y.tolist()
    x, y = circles_points(9, 0.0, 0.3, seed=0)
    ref_x, ref_y = make_circles(9, shuffle=False, noise=None, factor=0.3)
    np.testing.assert_allclose(x.numpy(), ref_x, atol=1e-14)
    assert y.tolist() == ref_y.tolist()


def test_moons_jitter_has_the_requested_standard_deviation() -> None:
    clean, _ = moons_points(4000, 0.0, seed=1)
    noisy, _ = moons_points(4000, 0.2, seed=1)
    assert float((noisy - clean).std()) == pytest.approx(0.2, rel=0.05)
    assert torch.equal(noisy, moons_points(4000, 0.2, seed=1)[0])
    assert not torch.equal(noisy, moons_points(4000, 0.2, seed=2)[0])


@pytest.mark.parametrize("name", ["two_moons", "circles"])
def test_classification_split_partitions_the_points(name: str) -> None:
    spec = classification({"name": name, "n_points": 100, "noise": 0.0, "test_fraction": 0.2})
    data = build_dataset(spec, dtype=torch.float64)
    assert data.y_train.dtype == torch.int64 and len(data.x_train) == 80 and len(data.x_test) == 20
    clean = moons_points(100, 0.0, 0) if name == "two_moons" else circles_points(100, 0.0, 0.5, 0)
    rows = {tuple(r) for r in torch.cat([data.x_train, data.x_test]).tolist()}
    assert rows == {tuple(r) for r in clean[0].tolist()}
    assert sorted(torch.cat([data.y_train, data.y_test]).tolist()) == [0] * 50 + [1] * 50
    assert (data.input_shape, data.n_outputs) == input_output_dims(spec) == ((2,), 2)
    json.dumps(data.meta)


def test_subset_keeps_a_seeded_part_of_the_training_points() -> None:
    spec = classification({"name": "two_moons", "n_points": 100, "test_fraction": 0.2, "subset": 30})
    full = build_dataset(spec.model_copy(update={"data": spec.data.model_copy(update={"subset": None})}))
    part, again = build_dataset(spec), build_dataset(spec)
    assert len(part.x_train) == 30 and torch.equal(part.x_train, again.x_train)
    assert torch.equal(part.x_test, full.x_test)  # the subset never touches the test split
    full_rows = {tuple(r) for r in full.x_train.tolist()}
    assert {tuple(r) for r in part.x_train.tolist()} <= full_rows
