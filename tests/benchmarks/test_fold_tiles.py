"""The folded kernels' tile benchmark, run end to end at tiny sizes under Triton's CPU interpreter:
every configuration it times gives the first one's gradients, the fastest is checked against its
definition, and its sweeps run the kernels they say."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_the_tile_benchmark_compares_configurations_that_agree(tmp_path: Path) -> None:
    out = tmp_path / "fold_tiles.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fold_tiles.py"), "--smoke", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert len(result["tiles"]) == 8 and result["best"] in result["tiles"]
    for name, row in result["tiles"].items():
        for kind in ("first", "hidden", "last"):
            assert row[f"{kind}_difference"] < 1e-6, (name, kind, row)
            assert row[f"{kind}_ms"] > 0
    assert result["best_vs_definition"] < 1e-6 and result["best_nan_kept"] == 0.0
    kernels = {row["fused_gemm"]: row["noise_streams"] for row in result["sweeps"]}
    assert "gemm+folded-activation" in kernels["fold"][0], kernels
    assert "gemm+fused-activation" in kernels["off"][0], kernels
