"""Freed tensor memory stays in the process heap: big blocks come from it, and a CPU step reuses its pages.

Left alone, glibc adapts its thresholds as blocks are freed, so how many pages a process faults in
without :func:`keep_freed_memory` depends on its allocation history (125 to 1,380 faults a step were
seen for the same step on machines of one kind). The tests therefore compare against something
fixed: where a fresh process's first big block comes from, and glibc's initial thresholds pinned.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")

FIRST_BLOCK = """
import ctypes, torch
from gni_engine.heap import keep_freed_memory
class MallInfo2(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in names.split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
kept = keep_freed_memory()
mapped_before = libc.mallinfo2().hblkhd
block = torch.empty(6 * 2**20)  # 24 MiB: above glibc's initial 128 KiB mmap threshold and anything
# freed during the imports (its threshold rises to the largest mmapped block freed), below 32 MiB
print(kept, libc.mallinfo2().hblkhd - mapped_before)
"""

STEP_FAULTS = """
import ctypes, os, resource
from gni_engine.heap import keep_freed_memory
if os.environ.get("PIN_GLIBC_INITIAL_THRESHOLDS") == "1":
    mallopt = ctypes.CDLL(None).mallopt
    assert mallopt(-3, 128 * 1024) and mallopt(-1, 128 * 1024)  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
from gni_engine.spec import parse_run_spec
from gni_engine.training import BatchTrainer
specs = [
    parse_run_spec({"data": {"n_points": 256}, "model": {"hidden": [128] * 3},
                    "noise": {"sigma": 0.1, "layers": "all"}, "training": {"steps": 100}, "seed": i})
    for i in range(8)
]
trainer = BatchTrainer(specs)
for _ in range(3):
    trainer.train_step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    trainer.train_step()
print(keep_freed_memory(), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _run(script: str, **env: str) -> tuple[bool, float]:
    out = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="mallinfo2 needs glibc 2.33")
def test_a_big_block_comes_from_the_heap_not_from_mmap() -> None:
    kept, mapped = _run(FIRST_BLOCK, GNI_KEEP_FREED_MEMORY="1")
    left_alone, mapped_without = _run(FIRST_BLOCK, GNI_KEEP_FREED_MEMORY="0")
    assert kept and not left_alone
    assert mapped == 0
    assert mapped_without >= 24 * 2**20


def test_a_stacked_cpu_step_reuses_freed_pages() -> None:
    """8 stacked runs of 1 → 128 × 3 → 1 on 256 points allocate 1 MiB activations: with glibc's initial
    thresholds every step maps and faults them in afresh (about 3,000 faults); kept, next to none."""
    kept, faults = _run(STEP_FAULTS, GNI_KEEP_FREED_MEMORY="1")
    pinned, faults_pinned = _run(STEP_FAULTS, GNI_KEEP_FREED_MEMORY="0", PIN_GLIBC_INITIAL_THRESHOLDS="1")
    assert kept and not pinned
    assert faults * 10 < faults_pinned, (faults, faults_pinned)
