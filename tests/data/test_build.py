"""build_dataset and input_output_dims across data sets: shapes from the spec, common meta, errors."""

from __future__ import annotations

import json

import pytest
import torch

from gni_engine.data import Dataset, build_dataset, input_output_dims
from gni_engine.errors import DataError
from gni_engine.spec import RunSpec


@pytest.mark.parametrize(
    ("task", "data", "model", "expected"),
    [
        ("regression", {"name": "sinusoids", "dim": 4}, "mlp", ((4,), 1)),
        ("classification", {"name": "circles"}, "mlp", ((2,), 2)),
        ("classification", {"name": "digits"}, "mlp", ((64,), 10)),
        ("regression", {"name": "diabetes"}, "mlp", ((10,), 1)),
        ("regression", {"name": "boston"}, "mlp", ((13,), 1)),
        ("classification", {"name": "mnist"}, "mlp", ((784,), 10)),
        ("classification", {"name": "fashion_mnist", "flatten": False}, "convnet", ((1, 28, 28), 10)),
        ("classification", {"name": "cifar10"}, "mlp", ((3072,), 10)),
        ("classification", {"name": "svhn", "flatten": False}, "convnet", ((3, 32, 32), 10)),
    ],
)
def test_dims_come_from_the_spec_alone(
    task: str, data: dict[str, object], model: str, expected: tuple[tuple[int, ...], int]
) -> None:
    spec = RunSpec.model_validate({"task": task, "data": data, "model": {"kind": model}})
    assert input_output_dims(spec) == expected  # no file is read: the data directory does not exist


def test_meta_names_the_data_seed_and_split_sizes() -> None:
    spec = RunSpec.model_validate(
        {"task": "classification", "data": {"name": "two_moons", "n_points": 40}, "seed": 4, "data_seed": 11}
    )
    data = build_dataset(spec)
    assert {k: data.meta[k] for k in ("name", "data_seed", "n_train", "n_test")} == {
        "name": "two_moons",
        "data_seed": 11,
        "n_train": 30,
        "n_test": 10,
    }
    assert json.loads(json.dumps(data.meta)) == data.meta


def test_integer_dtype_and_inconsistent_tensors_are_refused() -> None:
    with pytest.raises(DataError, match="floating-point"):
        build_dataset(RunSpec(), dtype=torch.int64)
    with pytest.raises(DataError, match="train has 3 inputs but 2 targets"):
        Dataset(torch.zeros(3, 1), torch.zeros(2, 1), torch.zeros(0, 1), torch.zeros(0, 1), (1,), 1, {})
