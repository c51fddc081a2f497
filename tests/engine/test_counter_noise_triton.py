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
import torch
from gni_engine.counter_noise import counter_normals, inject_reference
from gni_engine.counter_noise_triton import counter_normals_gpu, inject_gpu

keys = torch.tensor([3, 2**62 + 1, 12345], dtype=torch.int64)
starts = torch.tensor([0, 2**32 - 7, 2**40 + 3], dtype=torch.int64)
fast, slow = counter_normals_gpu(keys, starts, 5001), counter_normals(keys, starts, 5001)
assert float((fast - slow).abs().max()) < 2e-6
h = torch.randn(3, 50, 7, dtype=torch.float64)
a = torch.tensor([0.1, 0.0, 0.2], dtype=torch.float64)
m = torch.tensor([0.0, 0.3, 0.2], dtype=torch.float64)
g = torch.randn_like(h)
for sign in (1.0, -1.0):
    hs = h.clone().requires_grad_(True)
    ref = inject_reference(hs, a, m, keys, starts + 11, sign)
    (ref_grad,) = torch.autograd.grad(ref, hs, g)
    hk = h.clone().requires_grad_(True)
    got = inject_gpu(hk, a, m, keys, starts, 11, sign, True)
    (got_grad,) = torch.autograd.grad(got, hk, g)
    assert float((got - ref).abs().max()) < 1e-6, sign
    assert float((got_grad - ref_grad).abs().max()) < 1e-6, sign
print("ok")
"""


@pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="Triton is not installed (CPU-only PyTorch)"
)
def test_the_kernel_matches_the_reference_under_the_interpreter() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
