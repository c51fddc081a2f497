r"""Tabular data sets: scikit-learn's digits and diabetes, and Boston housing from ``housing.csv``.

Each is split train/test from the ``split`` stream and subset from the ``subset.train`` stream.
Regression inputs and targets are standardised with the statistics of the training points only
(the ones kept after subsetting); ``meta`` records them so predictions can be mapped back:
:math:`y = \mu_y + s_y z`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gni_engine.data.dataset import Dataset
from gni_engine.data.locations import first_existing, resolve_data_dir
from gni_engine.data.splits import data_generator, split_indices, standardise, subset_indices
from gni_engine.errors import DataError
from gni_engine.spec import BostonData, DiabetesData, DigitsData

BOSTON_FEATURES = (
    "CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT",
)  # fmt: skip
BOSTON_TARGET = "MEDV"
BOSTON_FILES = ("housing.csv", "housing.data")
BOSTON_LAYOUT = (
    "<dir>/boston/housing.csv or <dir>/housing.csv: a header row naming 13 feature columns and MEDV "
    "(or the headerless whitespace-separated housing.data, 14 numbers a row)"
)
_INDEX_COLUMNS = frozenset({"", "index", "unnamed: 0"})


def _train_rows(
    n: int, test_fraction: float, subset: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    train, test = split_indices(n, test_fraction, data_generator(seed, "split"))
    return train[subset_indices(len(train), subset, data_generator(seed, "subset.train"))], test


def digits(spec: DigitsData, seed: int, dtype: torch.dtype) -> Dataset:
    r"""The 1797 8×8 digit images of ``sklearn.datasets.load_digits``, pixels :math:`x / 16 \in [0, 1]`."""
    from sklearn.datasets import load_digits  # deferred: importing sklearn takes a second

    bunch = load_digits()
    x = torch.from_numpy(np.asarray(bunch.data, dtype=np.float64) / 16.0)  # (1797, 64)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))  # (1797,)
    train, test = _train_rows(len(x), spec.test_fraction, spec.subset, seed)
    return Dataset(
        x_train=x[train].to(dtype),
        y_train=y[train],
        x_test=x[test].to(dtype),
        y_test=y[test],
        input_shape=(64,),
        n_outputs=10,
        meta={"source": "sklearn.datasets.load_digits", "n_available": len(x), "pixel_scale": 16.0},
    )


def standardised_regression(
    x: torch.Tensor,
    y: torch.Tensor,
    train: torch.Tensor,
    test: torch.Tensor,
    dtype: torch.dtype,
    meta: dict[str, Any],
) -> Dataset:
    """Split float64 ``x`` (N, D) and ``y`` (N, 1), standardising both with the training rows' statistics.

    ``meta`` gains the statistics ``x_mean``, ``x_std``, ``y_mean``, ``y_std``. Fewer than two
    training rows is a :class:`DataError`: one row standardises to all zeros, a data set with
    nothing to learn.
    """
    if len(train) < 2:
        raise DataError(
            f"{len(train)} training row(s) after the split and subset ({len(x)} rows available); "
            "standardising needs at least 2: give more rows, a smaller test_fraction or a larger subset"
        )
    x_train, x_test, x_mean, x_std = standardise(x[train], x[test])
    y_train, y_test, y_mean, y_std = standardise(y[train], y[test])
    stats = {
        "x_mean": x_mean.tolist(),
        "x_std": x_std.tolist(),
        "y_mean": y_mean.item(),
        "y_std": y_std.item(),
    }
    return Dataset(
        x_train=x_train.to(dtype),
        y_train=y_train.to(dtype),
        x_test=x_test.to(dtype),
        y_test=y_test.to(dtype),
        input_shape=(x.shape[1],),
        n_outputs=1,
        meta={**meta, **stats},
    )


def diabetes(spec: DiabetesData, seed: int, dtype: torch.dtype) -> Dataset:
    """The 442 patients of ``sklearn.datasets.load_diabetes`` (raw, unscaled), 10 features, standardised."""
    from sklearn.datasets import load_diabetes  # deferred: importing sklearn takes a second

    bunch = load_diabetes(scaled=False)
    x = torch.from_numpy(np.asarray(bunch.data, dtype=np.float64))  # (442, 10)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.float64)).unsqueeze(1)  # (442, 1)
    train, test = _train_rows(len(x), spec.test_fraction, spec.subset, seed)
    meta = {"source": "sklearn.datasets.load_diabetes(scaled=False)", "n_available": len(x)}
    return standardised_regression(x, y, train, test, dtype, meta)


def _parse_float(text: str, path: Path, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}:{line}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}:{line}: {text!r} is not a finite number (missing values are not supported)")
    return value


def _housing_columns(header: list[str], path: Path) -> tuple[list[int], list[int]]:
    """Column indices of the 13 features, in BOSTON_FEATURES' order, and of MEDV, matched by name
    (any case); an unknown, missing or repeated name is a :class:`DataError` naming it."""
    by_name: dict[str, int] = {}
    unknown = []
    for j, name in enumerate(header):
        key = name.upper()
        if name.lower() in _INDEX_COLUMNS:
            continue
        if key not in (*BOSTON_FEATURES, BOSTON_TARGET):
            unknown.append(name)
        elif key in by_name:
            raise DataError(f"{path}: column {name!r} appears twice in the header {header}")
        else:
            by_name[key] = j
    missing = [name for name in (*BOSTON_FEATURES, BOSTON_TARGET) if name not in by_name]
    if unknown or missing:
        raise DataError(
            f"{path}: header {header}: unknown columns {unknown}, missing {missing}; the columns are "
            f"{', '.join(BOSTON_FEATURES)} and {BOSTON_TARGET} (any order, any case); "
            f"expected {BOSTON_LAYOUT}"
        )
    return [by_name[name] for name in BOSTON_FEATURES], [by_name[BOSTON_TARGET]]


def _read_housing_csv(path: Path) -> tuple[np.ndarray[Any, np.dtype[np.float64]], list[str]]:
    with path.open(newline="") as handle:
        rows = [(i, row) for i, row in enumerate(csv.reader(handle), start=1) if row]
    if not rows:
        raise DataError(f"{path}: empty file; expected {BOSTON_LAYOUT}")
    header = [name.strip().lstrip("\ufeff").strip() for name in rows[0][1]]  # a BOM before the first
    features, targets = _housing_columns(header, path)
    columns = [*features, targets[0]]
    table = []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: {len(row)} values, the header names {len(header)} columns")
        table.append([_parse_float(row[j], path, line) for j in columns])
    return np.asarray(table, dtype=np.float64).reshape(-1, len(columns)), list(BOSTON_FEATURES)


def _read_housing_data(path: Path) -> tuple[np.ndarray[Any, np.dtype[np.float64]], list[str]]:
    table = []
    for line, text in enumerate(path.read_text().splitlines(), start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != len(BOSTON_FEATURES) + 1:
            raise DataError(
                f"{path}:{line}: {len(fields)} values instead of {len(BOSTON_FEATURES) + 1}; "
                f"expected {BOSTON_LAYOUT}"
            )
        table.append([_parse_float(field, path, line) for field in fields])
    return np.asarray(table, dtype=np.float64).reshape(-1, len(BOSTON_FEATURES) + 1), list(BOSTON_FEATURES)


def read_housing(path: Path) -> tuple[np.ndarray[Any, np.dtype[np.float64]], list[str]]:
    """A table (N, 14) of the 13 features then MEDV, and the feature names, from either file format."""
    try:
        table, names = _read_housing_csv(path) if path.suffix == ".csv" else _read_housing_data(path)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: cannot read: {error}") from None
    if len(table) < 2:
        raise DataError(f"{path}: {len(table)} data rows; expected {BOSTON_LAYOUT}")
    return table, names


def boston(spec: BostonData, seed: int, dtype: torch.dtype, data_dir: str | Path | None) -> Dataset:
    """Boston housing: 13 features, target MEDV read from its own column, both standardised."""
    root = resolve_data_dir(data_dir, spec.data_dir, name="boston", layout=BOSTON_LAYOUT)
    path = first_existing(
        [root / "boston", root], BOSTON_FILES, name="boston", layout=BOSTON_LAYOUT.replace("<dir>", str(root))
    )
    table, names = read_housing(path)
    x = torch.from_numpy(table[:, :-1])  # (N, 13)
    y = torch.from_numpy(table[:, -1:])  # (N, 1) MEDV, never derived from the inputs
    train, test = _train_rows(len(x), spec.test_fraction, spec.subset, seed)
    meta = {"files": [str(path)], "feature_names": names, "target": BOSTON_TARGET, "n_available": len(x)}
    return standardised_regression(x, y, train, test, dtype, meta)
