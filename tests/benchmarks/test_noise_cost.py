"""The noise-cost benchmark end to end at tiny sizes under Triton's CPU interpreter: it times every
kernel it names, with and without the noise, in the trig variant its environment asks for."""

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
def test_the_noise_cost_benchmark_times_each_kernel_with_and_without_noise(tmp_path: Path) -> None:
    out = tmp_path / "noise_cost_shared.json"
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "GNI_NOISE_TRIG": "shared",
        "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "noise_cost.py"), "--smoke", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["noise_stream"] == "philox-counter/triton+shared-trig"
    assert set(result["trig_errors"]) == {"trig_libdevice", "trig_shared"}
    assert max(result["trig_errors"].values()) < 2e-7
    for kernel in ("first_forward", "hidden_forward", "last_forward"):
        assert result["ms"][f"{kernel}_ms"] > 0 and result["ms"][f"{kernel}_without_noise_ms"] > 0
    assert result["ms"]["normals_ms"] > 0 and result["ms"]["last_backward_ms"] > 0
