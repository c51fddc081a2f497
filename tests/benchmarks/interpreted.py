"""A benchmark script run end to end at its ``--smoke`` sizes under Triton's CPU interpreter, or
loaded as a module."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="Triton is not installed"
)


def load_benchmark(script: str) -> ModuleType:
    """``benchmarks/<script>`` imported as a module (the folder is not a package; its scripts import
    each other by name, as when run from it)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.append(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / "benchmarks" / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_benchmark(script: str, out: Path, *args: str, interpret: bool, **variables: str) -> dict[str, Any]:
    """Runs ``benchmarks/<script> *args --json out`` under Triton's interpreter or compiling for a
    GPU (``variables``: more of its environment) and returns the JSON it wrote; a non-zero exit
    fails the test with the script's output."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(variables, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def run_smoke(script: str, out: Path, **variables: str) -> dict[str, Any]:
    """``benchmarks/<script> --smoke`` under the interpreter: see :func:`run_benchmark`."""
    return run_benchmark(script, out, "--smoke", interpret=True, **variables)
