"""The Triton kernel of counter noise, run by Triton's CPU interpreter where Triton is installed.

The CI machine has no Triton (it comes with CUDA builds of PyTorch), so this skips there; the same
comparison runs on a GPU in ``benchmarks/gpu_checks.py``. The interpreter must be switched on before
Triton is imported, hence the subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = """
from gni_engine.counter_activation_triton import compare_fused_with_reference
from gni_engine.counter_noise_triton import compare_with_reference

differences = compare_with_reference("cpu")
assert max(differences.values()) < 2e-6, differences
fused = compare_fused_with_reference("cpu")
assert len(fused) == 81 and fused["nan_kept"] == 0.0, fused
assert max(fused.values()) < 2e-6, fused
print("ok")
"""


@pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="Triton is not installed (CPU-only PyTorch)"
)
def test_the_kernels_match_their_references_under_the_interpreter() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
