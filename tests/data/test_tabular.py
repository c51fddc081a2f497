"""Digits, diabetes and Boston housing: sizes, ranges, train-statistics standardisation, file parsing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes

from gni_engine.data import build_dataset, input_output_dims
from gni_engine.errors import DataError
from gni_engine.spec import RunSpec

FEATURES = ["CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT"]
# six made-up rows: 13 features, then MEDV (deliberately unrelated to the features)
ROWS = np.array(
    [[0.1 * i + j for j in range(13)] + [medv] for i, medv in enumerate([24.0, 21.6, 34.7, 33.4, 36.2, 28.7])]
)


def spec_for(data: dict[str, object]) -> RunSpec:
    task = "classification" if data["name"] == "digits" else "regression"
    return RunSpec.model_validate({"task": task, "data": data})


def test_digits_sizes_and_pixel_scale() -> None:
    spec = spec_for({"name": "digits"})
    data = build_dataset(spec, dtype=torch.float64)
    assert (len(data.x_train), len(data.x_test)) == (1348, 449)  # 1797 images, a quarter held out
    x = torch.cat([data.x_train, data.x_test])
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    assert torch.equal(x * 16, (x * 16).round())  # pixels are k / 16
    assert data.y_train.dtype == torch.int64 and set(data.y_train.tolist()) == set(range(10))
    assert (data.input_shape, data.n_outputs) == input_output_dims(spec) == ((64,), 10)


def test_diabetes_is_standardised_with_training_statistics() -> None:
    spec = spec_for({"name": "diabetes", "test_fraction": 0.25})
    data = build_dataset(spec, dtype=torch.float64)
    assert (len(data.x_train), len(data.x_test)) == (332, 110)
    np.testing.assert_allclose(data.x_train.mean(0).numpy(), np.zeros(10), atol=1e-12)
    np.testing.assert_allclose(data.x_train.std(0, correction=0).numpy(), np.ones(10), atol=1e-12)
    assert abs(data.y_train.mean().item()) < 1e-12 and data.y_train.std(correction=0).item() == pytest.approx(
        1.0
    )
    assert abs(data.x_test.mean().item()) > 1e-6  # the test split is not re-centred on itself
    meta = data.meta
    raw = load_diabetes(scaled=False)
    x_test = data.x_test.numpy() * meta["x_std"] + meta["x_mean"]
    y_test = data.y_test[:, 0].numpy() * meta["y_std"] + meta["y_mean"]
    raw_rows = {tuple(np.round(r, 6)) for r in np.column_stack([raw.data, raw.target])}
    assert {tuple(np.round(r, 6)) for r in np.column_stack([x_test, y_test])} <= raw_rows
    assert (data.input_shape, data.n_outputs) == input_output_dims(spec) == ((10,), 1)
    json.dumps(meta)


def write_housing_csv(path: Path, header: list[str], rows: np.ndarray, index_column: bool = False) -> None:
    lines = [",".join(header)]
    for i, row in enumerate(rows):
        values = [repr(float(v)) for v in row]
        lines.append(",".join([str(i + 1), *values] if index_column else values))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("layout", ["csv", "r_export_csv", "whitespace_data"])
def test_boston_reads_medv_as_the_target(tmp_path: Path, layout: str) -> None:
    folder = tmp_path / "boston"
    folder.mkdir()
    if layout == "csv":
        write_housing_csv(folder / "housing.csv", [*FEATURES, "MEDV"], ROWS)
    elif layout == "r_export_csv":  # quoted lower-case names after an unnamed index column
        header = ['""', *(f'"{n.lower()}"' for n in FEATURES), '"medv"']
        write_housing_csv(folder / "housing.csv", header, ROWS, index_column=True)
    else:
        (folder / "housing.data").write_text(
            "\n".join(" ".join(f"{v:9.4f}" for v in row) for row in ROWS) + "\n"
        )
    spec = spec_for({"name": "boston", "test_fraction": 0.0})
    data = build_dataset(spec, dtype=torch.float64, data_dir=tmp_path)
    meta = data.meta
    x = data.x_train.numpy() * meta["x_std"] + meta["x_mean"]
    y = data.y_train.numpy() * meta["y_std"] + meta["y_mean"]
    order = np.argsort(y[:, 0])
    expected = ROWS[np.argsort(ROWS[:, -1])]
    np.testing.assert_allclose(np.column_stack([x, y])[order], expected, atol=1e-10)
    assert meta["y_mean"] == pytest.approx(ROWS[:, -1].mean()) and meta["target"] == "MEDV"
    assert [n.upper() for n in meta["feature_names"]] == FEATURES
    assert (data.input_shape, data.n_outputs) == input_output_dims(spec) == ((13,), 1)
    assert meta["files"] == [str(folder / ("housing.data" if layout == "whitespace_data" else "housing.csv"))]


def test_boston_test_split_uses_training_statistics(tmp_path: Path) -> None:
    write_housing_csv(tmp_path / "housing.csv", [*FEATURES, "MEDV"], ROWS)
    data = build_dataset(
        spec_for({"name": "boston", "test_fraction": 0.5}), data_dir=tmp_path, dtype=torch.float64
    )
    assert len(data.x_train) == len(data.x_test) == 3
    train_y = data.y_train[:, 0].numpy() * data.meta["y_std"] + data.meta["y_mean"]
    assert data.meta["y_mean"] == pytest.approx(train_y.mean())
    test_y = data.y_test[:, 0].numpy() * data.meta["y_std"] + data.meta["y_mean"]
    assert sorted(np.round(np.concatenate([train_y, test_y]), 8)) == sorted(ROWS[:, -1])


def test_boston_missing_and_malformed_files(tmp_path: Path) -> None:
    spec = spec_for({"name": "boston"})
    with pytest.raises(DataError) as missing:
        build_dataset(spec, data_dir=tmp_path)
    assert str(tmp_path / "boston" / "housing.csv") in missing.value.message
    write_housing_csv(tmp_path / "housing.csv", [*FEATURES[:-1], "MEDV"], ROWS[:, 1:])
    with pytest.raises(DataError, match=r"unknown columns \[\], missing \['LSTAT'\]"):
        build_dataset(spec, data_dir=tmp_path)
    write_housing_csv(tmp_path / "housing.csv", [*FEATURES, "MEDV"], ROWS)
    text = (tmp_path / "housing.csv").read_text().replace("24.0", "NA")
    (tmp_path / "housing.csv").write_text(text)
    with pytest.raises(DataError, match=r"housing\.csv:2: 'NA' is not a number"):
        build_dataset(spec, data_dir=tmp_path)


def test_boston_columns_are_matched_by_name_in_any_order_and_case(tmp_path: Path) -> None:
    write_housing_csv(tmp_path / "housing.csv", [*FEATURES, "MEDV"], ROWS)
    spec = spec_for({"name": "boston"})
    reference = build_dataset(spec, data_dir=tmp_path, dtype=torch.float64)
    order = [13, *range(12, -1, -1)]  # MEDV first, then the features backwards, lower case, a BOM
    header = ["\ufeffmedv", *(FEATURES[j].lower() for j in range(12, -1, -1))]
    write_housing_csv(tmp_path / "housing.csv", header, ROWS[:, order])
    shuffled = build_dataset(spec, data_dir=tmp_path, dtype=torch.float64)
    assert torch.equal(shuffled.x_train, reference.x_train) and torch.equal(
        shuffled.y_train, reference.y_train
    )
    assert shuffled.meta["feature_names"] == FEATURES
    for bad, message in (
        ([*FEATURES, "MEDV", "CAT. MEDV"], r"unknown columns \['CAT. MEDV'\]"),  # derived from the target
        ([*FEATURES[:-1], "CRIM", "MEDV"], "'CRIM' appears twice"),
        ([f"x{j}" for j in range(13)] + ["MEDV"], r"unknown columns \['x0'"),
    ):
        rows = np.column_stack([ROWS, ROWS[:, :1]]) if len(bad) == 15 else ROWS
        write_housing_csv(tmp_path / "housing.csv", bad, rows)
        with pytest.raises(DataError, match=message):
            build_dataset(spec, data_dir=tmp_path)


def test_boston_with_one_training_row_is_refused_not_standardised_to_zeros(tmp_path: Path) -> None:
    write_housing_csv(tmp_path / "housing.csv", [*FEATURES, "MEDV"], ROWS[:2])
    with pytest.raises(
        DataError, match=r"1 training row\(s\) after the split and subset \(2 rows available\)"
    ):
        build_dataset(spec_for({"name": "boston"}), data_dir=tmp_path)
    write_housing_csv(tmp_path / "housing.csv", [*FEATURES, "MEDV"], ROWS)
    with pytest.raises(DataError, match="at least 2"):
        build_dataset(spec_for({"name": "boston", "subset": 1}), data_dir=tmp_path)
    assert len(build_dataset(spec_for({"name": "boston", "subset": 2}), data_dir=tmp_path).x_train) == 2


def test_data_directory_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_for({"name": "boston"})
    monkeypatch.delenv("GNI_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="GNI_DATA_DIR"):
        build_dataset(spec)
    write_housing_csv(tmp_path / "housing.csv", [*FEATURES, "MEDV"], ROWS)
    monkeypatch.setenv("GNI_DATA_DIR", str(tmp_path))
    assert build_dataset(spec).meta["files"] == [str(tmp_path / "housing.csv")]
