"""The fused GEMM's tile benchmark, run end to end at tiny sizes under Triton's CPU interpreter: every
tile of every kernel gives the first tile's results, and the fastest gives what the default path
(cuBLAS-style ``bmm`` and the folded kernels) gives for the same layer."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.interpreted import needs_triton, run_smoke


@needs_triton
def test_every_fused_gemm_tile_agrees_with_the_first_and_the_best_with_the_default(tmp_path: Path) -> None:
    result = run_smoke("gemm_tiles.py", tmp_path / "gemm_tiles.json")
    assert result["default"]["forward_ms"] > 0 and result["default"]["backward_ms"] > 0
    for kernel in ("_forward_kernel", "_grad_input_kernel", "_grad_weight_kernel"):
        rows = result["fused_gemm"][kernel]["tiles"]
        assert len(rows) >= 5, (kernel, rows)  # the autotuner's three candidates and more
        for name, row in rows.items():
            assert "error" not in row and row["ms"] > 0, (kernel, name, row)
            assert row["vs_first_tile"] < 1e-6 and row.get("mask_flips", 0.0) < 1e-3, (kernel, name, row)
        assert result["fused_gemm"][kernel]["best"] in rows
        assert result["fused_gemm"][kernel]["best_vs_default"] < 1e-6, (kernel, result["fused_gemm"][kernel])
        assert result["fused_gemm"][kernel]["best_bare_ms"] > 0
    assert result["fused_gemm_best"]["backward_ms"] > 0


SM90_PRECOMPILE = """
import sys
import torch
from triton.backends.compiler import GPUTarget
from triton.runtime.driver import driver


class CompileOnlyDriver:  # what Triton's JIT asks of a driver before it launches anything
    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")


driver.set_active(CompileOnlyDriver())
sys.path.insert(0, "benchmarks")
import gemm_tiles
from gni_engine import fused_linear_triton as fused

layer = gemm_tiles.Layer(2, 1024, 256, "tf32", "cpu")  # the reference shape; the runs are the grid's
result = gemm_tiles.precompile(layer, "cuda")
assert result["parallel"], result
for kernel in gemm_tiles.KERNELS:
    compiled = list(getattr(fused, kernel).device_caches[0][0].values())  # finalised on leaving
    assert len(compiled) == 2 * len(gemm_tiles.tiles(kernel)), (kernel, len(compiled))  # and bare
    assert all(k.metadata.target.arch == 90 for k in compiled), kernel
print("ok")
"""


@needs_triton
def test_every_tile_compiles_for_sm_90_through_the_jit_in_parallel_before_a_card_times_it(
    tmp_path: Path,
) -> None:
    """The benchmark's parallel compilation (Triton's ``AsyncCompileMode`` over the JIT's ``warmup``)
    run for real on this CPU machine, with a driver that reports an sm_90 target and launches
    nothing: every tile of every kernel lands in the JIT's cache, so a card spends its time timing."""
    import os
    import subprocess
    import sys

    from tests.benchmarks.interpreted import ROOT

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path), PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    done = subprocess.run(
        [sys.executable, "-c", SM90_PRECOMPILE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
