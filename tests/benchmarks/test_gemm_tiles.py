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
            assert row["vs_first_tile"] < 1e-6, (kernel, name, row)
        assert result["fused_gemm"][kernel]["best"] in rows
        assert result["fused_gemm"][kernel]["best_vs_default"] < 1e-6, (kernel, result["fused_gemm"][kernel])
    assert result["fused_gemm_best"]["backward_ms"] > 0
