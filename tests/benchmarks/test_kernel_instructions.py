"""The instruction-count benchmark: Triton compiles the draw kernel for sm_90 without a card, and the
count leaves out libdevice's large-angle slow path, which Box–Muller's angles never take."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.interpreted import load_benchmark, needs_triton, run_benchmark

counting = load_benchmark("kernel_instructions.py")
Instruction = counting.Instruction


def test_the_slow_path_is_a_forward_branch_around_local_memory_or_fp64() -> None:
    code = [
        Instruction(0x00, "FMUL", " R1, R2, R3"),
        Instruction(0x10, "BRA", " 0x50"),  # skips a slow path
        Instruction(0x20, "STL", " [R1], R2"),
        Instruction(0x30, "DMUL", " R4, R2, UR4"),
        Instruction(0x40, "IADD3", " R1, R1, 0x1, RZ"),
        Instruction(0x50, "BRA", " 0x70"),  # skips ordinary work: counted
        Instruction(0x60, "FADD", " R1, R1, R2"),
        Instruction(0x70, "BRA", " 0x00"),  # a loop back
        Instruction(0x80, "NOP", ""),
    ]
    assert counting.slow_path(code) == {0x20, 0x30, 0x40}
    counts = counting.count(code, normals_per_thread=2)
    assert counts["static_instructions"] == 9 and counts["fast_path_instructions"] == 5
    assert counts["fast_path_opcodes"] == {"BRA": 3, "FMUL": 1, "FADD": 1}
    assert counts["fast_path_per_normal"] == 2.5


@needs_triton
def test_both_trig_variants_compile_for_sm_90_and_are_counted(tmp_path: Path) -> None:
    result = run_benchmark("kernel_instructions.py", tmp_path / "counts.json", interpret=False)
    assert result["arch"] == "sm_90"
    libdevice, shared = result["variants"]["libdevice"], result["variants"]["shared"]
    assert libdevice["noise_stream"] == "philox-counter/triton"
    assert shared["noise_stream"] == "philox-counter/triton+shared-trig"
    # libdevice's cos and sin carry a Payne–Hanek path (local memory, fp64) that is left out
    assert libdevice["fast_path_instructions"] < libdevice["static_instructions"]
    for counts in (libdevice, shared):
        assert not {"STL", "LDL", "DMUL"} & set(counts["fast_path_opcodes"])
        # Philox4x32-10: four multiplies a round and counter (the first round's two of zero words fold away)
        counters = counts["normals_per_thread"] // 4
        assert counts["fast_path_opcodes"]["IMAD"] >= 9 * 4 * counters
        assert counts["fast_path_per_normal"] > 15
