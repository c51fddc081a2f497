"""The compile check: every kernel variant the GPU checks and the reference network launch (recorded
under the interpreter, with the GPU's tile sizes) compiles for sm_90 without a card, the opt-in
fused GEMM's tile candidates too, and a variant the compiler rejects is reported with its error, not
raised."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tests.benchmarks.interpreted import load_benchmark, needs_triton, run_benchmark


@needs_triton
def test_every_recorded_kernel_variant_compiles_for_sm_90_without_spilling_in_fp32(tmp_path: Path) -> None:
    result = run_benchmark("compile_check.py", tmp_path / "compiled.json", interpret=False)
    assert result["arch"] == "sm_90" and result["failed"] == []
    variants = result["variants"]
    kernels = {v["kernel"] for v in variants}
    assert kernels == {
        "_inject_kernel",
        "_activate_inject_kernel",
        "_gradient_tiles_kernel",
        "_last_layer_forward_kernel",
        "_adam_kernel",
    }
    # the card's sizes, not the interpreter's: the Adam kernel's block, the reference network's width
    assert {v["constexprs"]["BLOCK"] for v in variants if v["kernel"] == "_adam_kernel"} == {2048}
    assert any(v["constexprs"].get("WIDTH") == 256 for v in variants)
    for variant in variants:
        assert variant["registers"] > 0
        if "*fp64" not in variant["signature"].values():
            assert variant["spill_store_bytes"] == 0, variant["variant"]


@needs_triton
def test_the_fused_gemm_tile_candidates_compile_and_none_spills_in_tf32_at_the_reference_shape(
    tmp_path: Path,
) -> None:
    result = run_benchmark(
        "compile_check.py", tmp_path / "fused.json", "--kernels", "fused-gemm", interpret=False
    )
    assert result["kernels"] == "fused-gemm" and result["failed"] == []
    checking = load_benchmark("compile_check.py")
    from gni_engine.fused_linear_triton import TILE_CANDIDATES

    # the training layers (the start-up check's small layers keep their own shapes)
    reference = [v for v in result["variants"] if v["constexprs"]["M"] == checking.REFERENCE_POINTS]
    layers = defaultdict(list)  # one recorded launch: its candidates
    for variant in reference:
        constexprs = variant["constexprs"]
        assert constexprs["N"] == 256 and constexprs["K"] in (1, 256)  # the first layer has one input
        if constexprs["PRECISION"] == "tf32":
            assert variant["spill_store_bytes"] == 0, variant["variant"]
        launch = sorted((k, v) for k, v in constexprs.items() if k not in ("BM", "BN", "BK"))
        layers[(variant["kernel"], str(launch))].append(variant)
    assert {kernel for kernel, _ in layers} == set(TILE_CANDIDATES)
    for (kernel, _), candidates in layers.items():
        assert len(candidates) == len(TILE_CANDIDATES[kernel])
        # the autotuner always has a candidate that keeps everything in registers
        assert min(c["spill_store_bytes"] for c in candidates) == 0, candidates[0]["variant"]
    precisions = {v["constexprs"]["PRECISION"] for v in reference}
    assert precisions == {"ieee", "tf32", "tf32x3"}
    assert any(v["constexprs"]["K"] == 256 for v in reference)


@needs_triton
def test_a_variant_the_compiler_rejects_is_reported_with_its_error() -> None:
    checking = load_benchmark("compile_check.py")
    launch = {
        "module": "gni_engine.stacked_adam_triton",
        "kernel": "_adam_kernel",
        "signature": dict.fromkeys(
            ("p_ptr", "g_ptr", "m_ptr", "v_ptr", "active_ptr", "step_size_ptr", "coefficients_ptr"), "*fp32"
        )
        | {"n": "i32", "blocks_per_run": "i32", "IEEE_FP32": "constexpr", "BLOCK": "constexpr"},
        "constexprs": {"IEEE_FP32": True, "BLOCK": 1000},  # not a power of two: tl.arange refuses it
        "options": {},
    }
    result = checking.compile_launch(launch, 90)
    assert result["compiled"] is False and "power of 2" in result["error"]
