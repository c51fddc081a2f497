"""The GPU bench's collector: one JSON from the benchmarks' files and the anchor's printed blocks."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from tests.benchmarks.interpreted import load_benchmark


def _collector() -> ModuleType:
    return load_benchmark("collect_gpu_results.py")


def _anchor(tf32: bool, stacked: list[tuple[int, float]], compiled: list[tuple[int, float]]) -> str:
    block = {
        "cfg": {"tf32": tf32},
        "sequential": {"runs": 1, "runs_per_s": 0.2},
        "batched": [{"runs": n, "runs_per_s": r} for n, r in stacked],
        "compiled": [{"runs": n, "runs_per_s": r} for n, r in compiled],
    }
    return "== [1 s] anchor\nsome warning\n" + json.dumps(block, indent=1) + "\nSUMMARY device=x\n"


def test_ratios_pair_each_sweep_with_the_anchor_of_its_precision_and_size(tmp_path: Path) -> None:
    collect = _collector()
    sweep = {
        "args": {"precision": "fp32", "runs": 256},
        "results": [
            {"mode": "gni", "stacked_runs_per_s": 12.0},
            {"mode": "explicit", "stacked_runs_per_s": 6.0},
        ],
    }
    (tmp_path / "batching_fp32.json").write_text(json.dumps(sweep))
    (tmp_path / "anchor.txt").write_text(
        _anchor(False, [(256, 8.0)], []) + _anchor(True, [(1024, 13.0)], []) + "== cut short {\n"
    )
    (tmp_path / "anchor_compiled.txt").write_text(_anchor(False, [(1, 0.2)], [(256, 10.0)]))
    result = collect.collect(tmp_path)
    assert result["anchor"]["rates"]["stacked tf32 1024"] == 13.0
    gni, explicit = result["summary"]
    assert gni["vs_anchor_stacked"] == 1.5 and gni["vs_anchor_compiled"] == 1.2
    assert explicit["engine_runs_per_s"] == 6.0 and explicit["vs_anchor_stacked"] == 0.75
    assert "batching_tf32" not in result  # not run: left out, not invented
    assert gni["fused_gemm"] == "off"  # a sweep written before the option: cuBLAS


def test_fold_and_fused_gemm_sweeps_are_summarised_beside_the_cublas_one(tmp_path: Path) -> None:
    collect = _collector()
    for name, fused, rate in (
        ("batching_tf32", "off", 20.0),
        ("batching_tf32_fused_gemm", "on", 30.0),
        ("batching_tf32_fold", "fold", 24.0),
    ):
        sweep = {
            "args": {"precision": "tf32", "runs": 1024, "fused_gemm": fused},
            "results": [{"mode": "gni", "stacked_runs_per_s": rate}],
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(sweep))
    (tmp_path / "anchor.txt").write_text(_anchor(True, [(1024, 15.0)], []))
    rows = collect.collect(tmp_path)["summary"]
    assert [(r["fused_gemm"], r["engine_runs_per_s"], r["vs_anchor_stacked"]) for r in rows] == [
        ("off", 20.0, 20.0 / 15.0),
        ("fold", 24.0, 1.6),
        ("on", 30.0, 2.0),
    ]


def test_the_default_sweep_names_the_kernels_it_ran_beside_the_previous_default(tmp_path: Path) -> None:
    """Since the folded kernels became the default (``fused_gemm`` ``auto``), a summary row says which
    kernels a sweep ran, from the sweep's own record, and the ``off`` sweep is summarised after it."""
    collect = _collector()
    for name, fused, rate, kernels in (
        ("batching_tf32", "auto", 32.0, "philox-counter/triton, hidden layers gemm+folded-activation"),
        ("batching_tf32_off", "off", 27.0, "philox-counter/triton, hidden layers gemm+fused-activation"),
    ):
        sweep = {
            "args": {"precision": "tf32", "runs": 1024, "fused_gemm": fused},
            "results": [{"mode": "gni", "stacked_runs_per_s": rate, "noise_streams": [kernels]}],
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(sweep))
    rows = collect.collect(tmp_path)["summary"]
    assert [(r["fused_gemm"], r["engine_runs_per_s"]) for r in rows] == [("auto", 32.0), ("off", 27.0)]
    assert rows[0]["kernels"] == ["philox-counter/triton, hidden layers gemm+folded-activation"]
    assert "vs_anchor_stacked" not in rows[0]  # no anchor in this folder: no ratio


def test_the_sweep_with_pytorchs_adam_is_summarised_after_the_default_and_says_so(tmp_path: Path) -> None:
    """The Triton Adam kernel became the default on CUDA before a card measured it: the bench's
    left-over budget runs the TF32 sweep with PyTorch's fused Adam, and the summary tells them apart
    (a sweep written before the option ran PyTorch's)."""
    collect = _collector()
    for name, args in (
        ("batching_tf32", {"adam_kernel": "auto"}),
        ("batching_tf32_torch_adam", {"adam_kernel": "torch"}),
        ("batching_tf32_off", {"fused_gemm": "off"}),
    ):
        sweep = {
            "args": {"precision": "tf32", "runs": 1024, **args},
            "results": [{"mode": "gni", "stacked_runs_per_s": 30.0}],
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(sweep))
    rows = collect.collect(tmp_path)["summary"]
    assert [r["adam_kernel"] for r in rows] == ["auto", "torch", "torch"]


def test_the_kernel_bench_files_are_gathered_and_the_libdevice_trig_sweep_summarised(tmp_path: Path) -> None:
    """``scripts/gpu_kernel_bench.sh``'s files: the noise-cost timings of both trig variants, and a
    TF32 sweep drawn with libdevice's trig, summarised after the default's (the shared reduction)."""
    collect = _collector()
    for trig, label in (
        ("libdevice", "philox-counter/triton"),
        ("shared", "philox-counter/triton+shared-trig"),
    ):
        (tmp_path / f"noise_cost_{trig}.json").write_text(
            json.dumps({"noise_stream": label, "ms": {"normals_ms": 0.5}})
        )
    for name, kernels in (
        ("batching_tf32_libdevice_trig", "philox-counter/triton, hidden layers …, triton-adam"),
        (
            "batching_tf32",
            "philox-counter/triton+shared-trig, hidden layers gemm+folded-activation, triton-adam",
        ),
    ):
        sweep = {
            "args": {"precision": "tf32", "runs": 1024, "adam_kernel": "auto"},
            "results": [{"mode": "gni", "stacked_runs_per_s": 33.0, "noise_streams": [kernels]}],
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(sweep))
    result = collect.collect(tmp_path)
    assert result["noise_cost_libdevice"]["noise_stream"] == "philox-counter/triton"
    assert [row["kernels"][0].split(",")[0] for row in result["summary"]] == [
        "philox-counter/triton+shared-trig",
        "philox-counter/triton",
    ]


def test_every_json_the_gpu_scripts_write_is_one_the_collector_gathers() -> None:
    """A benchmark file a script writes under a name the collector does not know would be measured
    on a card and then left out of gpu_bench.json (and so out of what comes back from the card)."""
    import re

    collect = _collector()
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    written = {
        name
        for script in scripts.glob("gpu_*.sh")
        for name in re.findall(r'"\$out/(\w+)\.json"', script.read_text())
    }
    assert {"batching_tf32", "batching_tf32_libdevice_trig", "gpu_checks"} <= written
    assert written <= set(collect.ENGINE_FILES), written - set(collect.ENGINE_FILES)


def test_the_fused_gemm_tiles_are_gathered_and_summarised_beside_the_default(tmp_path: Path) -> None:
    collect = _collector()
    tiles = {
        "precision": "tf32",
        "compilation": {"seconds": 21.0, "parallel": True},
        "default": {"forward_ms": 1.6, "backward_ms": 2.9},
        "fused_gemm_best": {"forward_ms": 1.2, "backward_ms": 2.1},
        "fused_gemm": {"_forward_kernel": {"best": "64x64x32/w4/s3"}, "_grad_weight_kernel": {"best": "a"}},
    }
    (tmp_path / "gemm_tiles.json").write_text(json.dumps(tiles))
    result = collect.collect(tmp_path)
    assert result["gemm_tiles"]["fused_gemm_best"]["forward_ms"] == 1.2
    line = collect.gemm_tiles_line(result["gemm_tiles"])
    assert "default forward 1.600 backward 2.900; fused GEMM forward 1.200 backward 2.100" in line
    assert "forward_kernel 64x64x32/w4/s3, grad_weight_kernel a; compiled in 21 s" in line
