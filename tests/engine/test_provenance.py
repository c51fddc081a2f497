"""A result names the code, libraries, machine and data bytes that produced it."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import gni_engine.provenance as provenance
from gni_engine.execution import execute_runs
from gni_engine.spec import parse_run_spec

FEATURES = ["CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT"]


def test_the_fingerprint_changes_with_any_source_file_and_only_with_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "gni_engine"
    shutil.copytree(provenance.ENGINE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    fingerprint = provenance.engine_fingerprint.__wrapped__  # uncached
    installed = fingerprint()
    monkeypatch.setattr(provenance, "ENGINE_ROOT", copy)
    original = fingerprint()
    assert original == installed  # the copy is the installed code: the folder's place does not count
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "noise.cpython-311.pyc").write_bytes(b"compiled")
    (copy / "notes.txt").write_text("not code")
    assert fingerprint() == original
    kernel = copy / "csrc" / "philox_noise.c"
    kernel.write_text(kernel.read_text() + "\n/* edited */\n")
    assert fingerprint() != original


def test_results_name_code_libraries_machine_and_the_data_bytes(tmp_path: Path) -> None:
    rows = np.array([[0.1 * i + j for j in range(13)] + [20.0 + i] for i in range(8)])
    data_file = tmp_path / "data" / "housing.csv"
    data_file.parent.mkdir()
    data_file.write_text(
        ",".join([*FEATURES, "MEDV"])
        + "\n"
        + "".join(",".join(str(float(v)) for v in r) + "\n" for r in rows)
    )
    spec = parse_run_spec(
        {
            "task": "regression",
            "data": {"name": "boston", "data_dir": str(data_file.parent)},
            "model": {"hidden": [4]},
            "training": {"steps": 2},
            "analyses": {"noise_gap_samples": 2},
        }
    )
    [outcome] = execute_runs([spec], [tmp_path / "run"], figures=False)
    summary = json.loads((tmp_path / "run" / "results.json").read_text())["summary"]
    assert outcome.status == "succeeded"
    assert summary["engine_fingerprint"] == provenance.engine_fingerprint()
    assert summary["python_version"] == platform.python_version()
    assert (summary["numpy_version"], summary["torch_version"]) == (np.__version__, torch.__version__)
    assert summary["device_name"] == provenance.cpu_model()  # the CPU model on a CPU, not "x86_64"
    data = summary["data"]
    assert (data["name"], data["n_train"], data["n_test"], data["data_seed"]) == ("boston", 6, 2, 0)
    assert data["file_digests"] == [
        {
            "path": str(data_file),
            "bytes": data_file.stat().st_size,
            "sha256": hashlib.sha256(data_file.read_bytes()).hexdigest(),
        }
    ]
    data_file.write_text(data_file.read_text().replace("20.0", "21.0"))  # other bytes, same spec
    execute_runs([spec], [tmp_path / "again"], figures=False)
    again = json.loads((tmp_path / "again" / "results.json").read_text())["summary"]
    assert again["spec_hash"] == summary["spec_hash"]
    assert again["data"]["file_digests"][0]["sha256"] != data["file_digests"][0]["sha256"]
