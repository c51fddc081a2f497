"""Timing device work for the benchmarks: CUDA events on a GPU, a wall clock for the CPU smoke runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import torch


def median_ms(work: Callable[[], object], device: str, repeats: int = 10, warmups: int = 1) -> float:
    """Median milliseconds of ``work()`` on ``device`` over ``repeats`` calls, after ``warmups``
    (the first compiles). On the CPU (the smoke runs, under Triton's interpreter) one call is timed
    by the wall clock: a rough figure that only shows the path runs."""
    for _ in range(warmups):
        work()
    if device != "cuda":
        start_s = time.perf_counter()
        work()
        return (time.perf_counter() - start_s) * 1e3
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        work()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def machine(device: str) -> dict[str, str]:
    """The card (or ``cpu``) and torch version a benchmark's JSON starts with."""
    return {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__}


def write_result(path: str, result: dict[str, Any], started_s: float) -> None:
    """Add the seconds since ``started_s`` (``time.perf_counter()``), write ``result`` as JSON, say so."""
    result["seconds"] = time.perf_counter() - started_s
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"done in {result['seconds']:.0f} s")
