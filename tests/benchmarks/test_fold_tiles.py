"""The folded kernels' tile benchmark, run end to end at tiny sizes under Triton's CPU interpreter:
every configuration it times gives the first one's gradients, the fastest is checked against its
definition, and its sweeps run the kernels they say."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.interpreted import needs_triton, run_smoke


@needs_triton
def test_the_tile_benchmark_compares_configurations_that_agree(tmp_path: Path) -> None:
    result = run_smoke("fold_tiles.py", tmp_path / "fold_tiles.json")
    assert len(result["tiles"]) == 8 and result["best"] in result["tiles"]
    for name, row in result["tiles"].items():
        for kind in ("first", "hidden", "last"):
            assert row[f"{kind}_difference"] < 1e-6, (name, kind, row)
            assert row[f"{kind}_ms"] > 0
    assert result["best_vs_definition"] < 1e-6 and result["best_nan_kept"] == 0.0
    kernels = {row["fused_gemm"]: row["noise_streams"] for row in result["sweeps"]}
    assert "gemm+folded-activation" in kernels["fold"][0], kernels
    assert "gemm+fused-activation" in kernels["off"][0], kernels
