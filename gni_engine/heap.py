"""Keep freed tensor memory in the process heap (glibc), so that CPU steps do not fault in fresh pages.

PyTorch's CPU allocator is ``malloc``; glibc serves large blocks (above a threshold that starts at
128 KiB and grows as blocks are freed) with ``mmap`` and gives them back with ``munmap``, and trims
the heap's free top. A stacked step of 32 runs allocates and frees some 14 MiB of 4 MiB activations,
and without this every one came back as fresh pages: about 3,500 page faults and 10–15 ms of kernel
time in a 40 ms step on a 2-core VM. Fixing the thresholds (blocks up to :data:`MMAP_THRESHOLD`
from the heap, free memory kept up to :data:`TRIM_THRESHOLD`) makes the second step reuse the first
one's pages. The process then holds up to that much freed memory (no more than the peak it reached
anyway) instead of returning it to the system between steps.

It is a process-wide setting, made once and only on glibc; ``GNI_KEEP_FREED_MEMORY=0`` leaves the
allocator alone.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's upper limit for this parameter on 64-bit systems
TRIM_THRESHOLD = 256 * 2**20


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (once per process); whether they were set."""
    if os.environ.get("GNI_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if done:
        log.info(
            "glibc heap: blocks up to %d MiB from the heap, %d MiB of freed memory kept",
            MMAP_THRESHOLD >> 20,
            TRIM_THRESHOLD >> 20,
        )
    return done
