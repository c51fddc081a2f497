"""Gather what ``scripts/gpu_bench.sh`` wrote into one JSON, and print the sweep against its anchors.

    python benchmarks/collect_gpu_results.py OUT_DIR   # writes OUT_DIR/gpu_bench.json

Reads the benchmarks' JSON files and the JSON block that ``.bench/anchor_bench.py`` prints before its
SUMMARY line. Ratios are printed only between figures of this one call (one card).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SWEEP_FILES = (
    "batching_tf32",
    "batching_fp32",
    "batching_tf32_torch_adam",
    "batching_tf32_shared_trig",
    "batching_tf32_libdevice_trig",
    "batching_tf32_off",
    "batching_fp32_off",
    "batching_tf32_fold",
    "batching_fp32_fold",
    "batching_tf32_fused_gemm",
    "batching_fp32_fused_gemm",
)
NOISE_FILES = ("noise_cost_libdevice", "noise_cost_shared")
ENGINE_FILES = ("gpu_checks", *SWEEP_FILES, "step_times", "fold_tiles", "gemm_tiles", *NOISE_FILES)
ANCHOR_FILES = ("anchor", "anchor_compiled")


def anchor_blocks(text: str) -> list[dict[str, Any]]:
    """Every JSON object the anchor printed (one per invocation; a run cut short prints none)."""
    blocks, decoder, at = [], json.JSONDecoder(), 0
    while (start := text.find("{\n", at)) != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            at = start + 2
            continue
        if isinstance(value, dict) and "cfg" in value:
            blocks.append(value)
        at = end
    return blocks


def anchor_rates(blocks: list[dict[str, Any]]) -> dict[str, float]:
    """runs/s keyed like ``stacked fp32 256`` / ``compiled tf32 1024`` / ``sequential fp32``."""
    rates: dict[str, float] = {}
    for block in blocks:
        precision = "tf32" if block["cfg"].get("tf32") else "fp32"
        if block["sequential"]["runs"]:
            rates[f"sequential {precision}"] = block["sequential"]["runs_per_s"]
        for kind in ("batched", "compiled"):
            for row in block[kind]:
                label = "stacked" if kind == "batched" else "compiled"
                rates[f"{label} {precision} {row['runs']}"] = row["runs_per_s"]
    return rates


def collect(folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gpu = folder / "gpu.txt"
    if gpu.exists():
        out["gpu"] = gpu.read_text().strip().splitlines()
    for name in ENGINE_FILES:
        path = folder / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    blocks = [
        b
        for name in ANCHOR_FILES
        if (folder / f"{name}.txt").exists()
        for b in anchor_blocks((folder / f"{name}.txt").read_text())
    ]
    out["anchor"] = {"rates": anchor_rates(blocks), "raw": blocks}
    rows = []
    for name in SWEEP_FILES:
        sweep = out.get(name)
        if sweep is None:
            continue
        precision, runs = sweep["args"]["precision"], sweep["args"]["runs"]
        for result in sweep["results"]:
            row = {
                "mode": result["mode"],
                "fused_gemm": sweep["args"].get("fused_gemm", "off"),
                "adam_kernel": sweep["args"].get("adam_kernel", "torch"),
                "precision": precision,
                "runs": runs,
                "engine_runs_per_s": result["stacked_runs_per_s"],
                "kernels": result.get("noise_streams", []),
            }
            for label in ("stacked", "compiled"):
                anchor = out["anchor"]["rates"].get(f"{label} {precision} {runs}")
                if anchor:
                    row[f"vs_anchor_{label}"] = result["stacked_runs_per_s"] / anchor
            rows.append(row)
    out["summary"] = rows
    return out


def gemm_tiles_line(tiles: dict[str, Any]) -> str:
    """One hidden layer, forward and backward ms: the default against the fused GEMM's best tiles."""
    default, ours = tiles["default"], tiles["fused_gemm_best"]
    best = ", ".join(f"{kernel.strip('_')} {row['best']}" for kernel, row in tiles["fused_gemm"].items())
    return (
        f"one hidden layer ({tiles['precision']}), ms: default forward {default['forward_ms']:.3f} backward "
        f"{default['backward_ms']:.3f}; fused GEMM forward {ours['forward_ms']:.3f} backward "
        f"{ours['backward_ms']:.3f} ({best}; compiled in {tiles['compilation']['seconds']:.0f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    result = collect(args.folder)
    (args.folder / "gpu_bench.json").write_text(json.dumps(result, indent=2))
    for row in result["summary"]:
        ratios = ", ".join(f"{k.removeprefix('vs_')} {v:.2f}×" for k, v in row.items() if k.startswith("vs_"))
        print(
            f"{row['mode']} {row['precision']} {row['runs']} runs, fused GEMM {row['fused_gemm']}, "
            f"Adam {row['adam_kernel']} "
            f"({'; '.join(row['kernels']) or '?'}): {row['engine_runs_per_s']:.2f} runs/s"
            + (f" ({ratios})" if ratios else "")
        )
    print(f"anchor runs/s: {json.dumps(result['anchor']['rates'])}")
    for name in NOISE_FILES:
        if name in result:
            ms = result[name]["ms"]
            print(f"{result[name]['noise_stream']}: " + ", ".join(f"{k} {v:.3f}" for k, v in ms.items()))
    if "gemm_tiles" in result:
        print(gemm_tiles_line(result["gemm_tiles"]))
    adam = result.get("gpu_checks", {}).get("adam_kernel")
    if adam:
        print(f"Adam update of {adam['runs']} runs, ms: {json.dumps(adam['ms'])}")
    print(f"wrote {args.folder / 'gpu_bench.json'}")


if __name__ == "__main__":
    main()
