"""How many machine instructions the noise draws cost, counted without a card.

Triton compiles for a GPU it does not see: this compiles the counter-noise kernel
(:mod:`gni_engine.counter_noise_triton`, drawing normals only) for a chosen architecture (default
sm_90, an H100's or H200's) once per Box–Muller trig variant (``GNI_NOISE_TRIG``, read when the
module is imported, so each variant compiles in its own process), disassembles it with the
``cuobjdump`` bundled with Triton, and counts the SASS instructions one thread runs for its share
of normals.

libdevice's ``cos`` and ``sin`` keep a slow path for |angle| > 105,615 (Payne–Hanek: local memory,
fp64) that Box–Muller's angles, in (0, 2π], never take; the *fast path* count leaves out every
forward branch's body that holds local-memory or fp64 instructions. These are static counts, not
timings: they show which variant issues fewer instructions in kernels the draws bound, not how
much faster a card runs them (issue width, latencies and memory overlap decide that).

    python benchmarks/kernel_instructions.py --json out.json [--arch 90]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compile_check import compile_kernel, ptxas_report, triton_tool  # this folder's

SIGNATURE = {
    "src_ptr": "*fp32",
    "dst_ptr": "*fp32",
    "add_ptr": "*fp32",
    "mul_ptr": "*fp32",
    "keys_ptr": "*i64",
    "starts_ptr": "*i64",
    "point_offset": "i64",
    "n": "i32",
    "sign": "fp32",
    "BACKWARD": "constexpr",
    "NORMALS_ONLY": "constexpr",
    "BLOCK": "constexpr",
}
SLOW_PATH_OPCODES = ("LDL", "STL", "DMUL", "DFMA", "DADD")
INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


@dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str
    operands: str


def compile_draw_kernel(arch: int, cubin: Path) -> dict[str, Any]:
    """Compile the normals-only draw kernel for sm_<arch> in this process's trig variant, writing
    its binary to ``cubin``; its stream label, threads, normals a thread and registers."""
    from gni_engine import counter_noise_triton as noise

    launch = {
        "module": noise.__name__,
        "kernel": "_inject_kernel",
        "signature": SIGNATURE,
        "constexprs": {"BACKWARD": False, "NORMALS_ONLY": True, "BLOCK": noise.BLOCK},
        "options": {},
    }
    kernel = compile_kernel(launch, arch)
    cubin.write_bytes(kernel.asm["cubin"])
    threads = kernel.metadata.num_warps * 32
    return {
        "noise_stream": noise.STREAM_LABEL,
        "threads": threads,
        "normals_per_thread": 4 * noise.BLOCK // threads,
        "registers": ptxas_report(kernel.asm["ptx"], arch)["registers"],
    }


def disassemble(cubin: Path) -> list[Instruction]:
    """The kernel's SASS instructions, in address order."""
    sass = subprocess.run(
        [triton_tool("cuobjdump"), "-sass", cubin], capture_output=True, text=True, check=True
    ).stdout
    return [Instruction(int(a, 16), op, rest) for a, op, rest in INSTRUCTION.findall(sass)]


def slow_path(instructions: list[Instruction]) -> set[int]:
    """Addresses inside forward branches whose bodies use local memory or fp64 (libdevice's
    large-angle reduction), which the angles of a draw never reach."""
    skipped: set[int] = set()
    for i, branch in enumerate(instructions):
        target = re.search(r"0x([0-9a-f]+)", branch.operands)
        if branch.opcode != "BRA" or not target or int(target.group(1), 16) <= branch.address:
            continue
        body = [x for x in instructions[i + 1 :] if x.address < int(target.group(1), 16)]
        if any(x.opcode.startswith(SLOW_PATH_OPCODES) for x in body):
            skipped.update(x.address for x in body)
    return skipped


def count(instructions: list[Instruction], normals_per_thread: int) -> dict[str, object]:
    skipped = slow_path(instructions)
    fast = [x.opcode.split(".")[0] for x in instructions if x.address not in skipped and x.opcode != "NOP"]
    return {
        "static_instructions": len(instructions),
        "fast_path_instructions": len(fast),
        "fast_path_per_normal": round(len(fast) / normals_per_thread, 1),
        "fast_path_opcodes": dict(collections.Counter(fast).most_common()),
    }


def measure_variant(trig: str, arch: int, folder: Path) -> dict[str, object]:
    """Compile and count one trig variant in a child process (the variant is fixed at import)."""
    env = {**os.environ, "GNI_NOISE_TRIG": trig}
    out = subprocess.run(
        [sys.executable, __file__, "--variant-only", str(folder / f"{trig}.json"), "--arch", str(arch)],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"compiling the {trig} variant failed:\n{out.stderr[-3000:]}")
    return json.loads((folder / f"{trig}.json").read_text())


def variant_only(result_path: Path, arch: int) -> None:
    cubin = result_path.with_suffix(".cubin")
    meta = compile_draw_kernel(arch, cubin)
    counts = count(disassemble(cubin), meta["normals_per_thread"])
    result_path.write_text(json.dumps({**meta, **counts}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write the counts here")
    parser.add_argument("--arch", type=int, default=90, help="compute capability ×10 (90: H100/H200)")
    parser.add_argument("--variant-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant_only:
        variant_only(args.variant_only, args.arch)
        return
    import tempfile

    import triton

    from gni_engine.counter_noise import NOISE_TRIG_CHOICES

    with tempfile.TemporaryDirectory() as folder:
        variants = {trig: measure_variant(trig, args.arch, Path(folder)) for trig in NOISE_TRIG_CHOICES}
    result = {
        "arch": f"sm_{args.arch}",
        "triton": triton.__version__,
        "kernel": "counter noise, normals only",
    }
    print(f"counter-noise draw kernel compiled for sm_{args.arch} with Triton {triton.__version__}")
    print(f"{'variant':<10} {'static':>7} {'fast path':>10} {'per normal':>11} {'registers':>10}")
    for trig, counts in variants.items():
        print(
            f"{trig:<10} {counts['static_instructions']:>7} {counts['fast_path_instructions']:>10} "
            f"{counts['fast_path_per_normal']:>11} {counts['registers']:>10}"
        )
    if args.json:
        args.json.write_text(json.dumps({**result, "variants": variants}, indent=2))


if __name__ == "__main__":
    main()
