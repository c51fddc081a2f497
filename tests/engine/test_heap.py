"""Freed tensor memory stays in the heap: a CPU training step reuses pages instead of faulting them in."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

STEP_FAULTS = """
import resource
from gni_engine.heap import keep_freed_memory
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


def _faults_per_step(keep: str) -> tuple[bool, float]:
    env = {**os.environ, "GNI_KEEP_FREED_MEMORY": keep}
    out = subprocess.run(
        [sys.executable, "-c", STEP_FAULTS], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
def test_a_stacked_cpu_step_reuses_freed_pages() -> None:
    """8 stacked runs of 1 → 128 × 3 → 1 on 256 points allocate 1 MiB activations: glibc alone maps
    and unmaps them every step (hundreds of page faults); with the thresholds set, next to none."""
    kept, faults = _faults_per_step("1")
    left_alone, faults_without = _faults_per_step("0")
    assert kept and not left_alone
    assert faults < 100 and faults * 5 < faults_without, (faults, faults_without)
