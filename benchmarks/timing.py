"""Timing device work for the benchmarks: CUDA events on a GPU, a wall clock for the CPU smoke runs."""

from __future__ import annotations

import time
from collections.abc import Callable

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
