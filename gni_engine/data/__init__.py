"""The engine's data sets, built deterministically from a run spec.

The data of a run depend only on ``spec.data``, ``spec.task`` and the data seed
(``spec.effective_data_seed``): every random draw (sinusoid phases, point clouds, splits, subsets,
dequantisation noise) comes from a generator derived from that seed, so runs of a sweep that share
these see bit-identical data, whatever their model, noise or training. File data sets are read from
``data_dir``, else ``spec.data.data_dir``, else ``$GNI_DATA_DIR``; nothing is downloaded.

>>> from gni_engine.spec import RunSpec
>>> spec = RunSpec.model_validate({"data": {"name": "sinusoids", "n_points": 64, "frequencies": [3.0]}})
>>> data = build_dataset(spec)
>>> data.x_train[:3, 0].tolist(), data.input_shape, data.n_outputs
([0.0, 0.015625, 0.03125], (1,), 1)
>>> bool(torch.equal(data.y_train, build_dataset(spec).y_train))
True
>>> input_output_dims(RunSpec.model_validate({"task": "classification", "data": {"name": "mnist"}}))
((784,), 10)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from gni_engine.data.dataset import Dataset
from gni_engine.data.images import IMAGE_SHAPES, N_CLASSES, image_dataset
from gni_engine.data.synthetic import circles, sinusoids, two_moons
from gni_engine.data.tabular import BOSTON_FEATURES, boston, diabetes, digits
from gni_engine.errors import DataError
from gni_engine.provenance import data_files
from gni_engine.spec import (
    BostonData,
    CirclesData,
    DiabetesData,
    DigitsData,
    ImageData,
    RunSpec,
    SinusoidsData,
    TwoMoonsData,
)

__all__ = ["Dataset", "build_dataset", "input_output_dims"]


def input_output_dims(spec: RunSpec) -> tuple[tuple[int, ...], int]:
    """``(input_shape, n_outputs)`` from the spec alone, without reading any data."""
    data = spec.data
    if isinstance(data, SinusoidsData):
        return (data.dim,), 1
    if isinstance(data, TwoMoonsData | CirclesData):
        return (2,), 2
    if isinstance(data, DigitsData):
        return (64,), 10
    if isinstance(data, DiabetesData):
        return (10,), 1
    if isinstance(data, BostonData):
        return (len(BOSTON_FEATURES),), 1
    shape = IMAGE_SHAPES[data.name]
    return ((shape[0] * shape[1] * shape[2],) if data.flatten else shape), N_CLASSES


def build_dataset(
    spec: RunSpec, *, dtype: torch.dtype = torch.float32, data_dir: str | Path | None = None
) -> Dataset:
    """The train and test tensors of ``spec.data``, inputs (and regression targets) in ``dtype``.

    ``meta`` always holds ``name``, ``data_seed``, ``n_train`` and ``n_test`` besides the data
    set's own facts. Raises :class:`~gni_engine.errors.DataError` for missing or corrupt files.
    """
    if not dtype.is_floating_point:
        raise DataError(f"dtype must be a floating-point type, got {dtype}")
    data, seed = spec.data, spec.effective_data_seed
    dataset: Dataset
    if isinstance(data, SinusoidsData):
        dataset = sinusoids(data, seed, dtype)
    elif isinstance(data, TwoMoonsData):
        dataset = two_moons(data, seed, dtype)
    elif isinstance(data, CirclesData):
        dataset = circles(data, seed, dtype)
    elif isinstance(data, DigitsData):
        dataset = digits(data, seed, dtype)
    elif isinstance(data, DiabetesData):
        dataset = diabetes(data, seed, dtype)
    elif isinstance(data, BostonData):
        dataset = boston(data, seed, dtype, data_dir)
    elif isinstance(data, ImageData):
        dataset = image_dataset(data, seed, dtype, data_dir)
    expected = input_output_dims(spec)
    if (dataset.input_shape, dataset.n_outputs) != expected:  # a reader and the known shapes disagree
        raise DataError(
            f"{data.name}: built {dataset.input_shape} → {dataset.n_outputs}, expected {expected}"
        )
    common: dict[str, object] = {
        "name": data.name,
        "data_seed": seed,
        "n_train": len(dataset.x_train),
        "n_test": len(dataset.x_test),
    }
    if "files" in dataset.meta:  # which bytes were read: a result names its data, not only a path
        common["file_digests"] = data_files(dataset.meta["files"])
    return dataclasses.replace(dataset, meta={**common, **dataset.meta})
