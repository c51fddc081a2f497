"""Which code, libraries and machine produced a result, and which data files it read.

:func:`engine_fingerprint` identifies the engine's code itself, not only its version number: a
SHA-256 over every source file of the installed package (Python, the C kernel, the presets' YAML),
so two installations with edited code never pass for one another, whatever ``__version__`` says.
Results, checkpoints and the service's result reuse carry it.

>>> len(engine_fingerprint()) == 16 and engine_fingerprint() == engine_fingerprint()
True
"""

from __future__ import annotations

import functools
import hashlib
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ENGINE_ROOT = Path(__file__).resolve().parent
SOURCE_SUFFIXES = (".py", ".c", ".yaml")
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


@functools.cache
def engine_fingerprint() -> str:
    """The first 16 hex digits of SHA-256 over the engine's source files, by relative path."""
    digest = hashlib.sha256()
    for path in sorted(p for p in ENGINE_ROOT.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()):
        relative = path.relative_to(ENGINE_ROOT).as_posix()
        if "__pycache__" in relative:
            continue
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def software_facts() -> dict[str, str]:
    """The engine's fingerprint and the versions of what computes with it."""
    import numpy as np  # deferred: the fingerprint alone (the API's result reuse) needs neither
    import torch

    return {
        "engine_fingerprint": engine_fingerprint(),
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "torch_version": torch.__version__,
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def file_sha256(path: Path) -> str:
    """SHA-256 of a data file, remembered per (path, size, modification time) within a process."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def data_files(paths: Sequence[str]) -> list[dict[str, Any]]:
    """``{"path", "bytes", "sha256"}`` of each file a data set was read from."""
    return [{"path": p, "bytes": Path(p).stat().st_size, "sha256": file_sha256(Path(p))} for p in paths]
