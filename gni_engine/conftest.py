"""Doctest collection of the engine: modules that need an optional GPU stack are left out where absent."""

import importlib.util
from pathlib import Path

# every Triton module is named *_triton.py, so one added later cannot be forgotten here
collect_ignore: list[str] = (
    []
    if importlib.util.find_spec("triton")
    else sorted(p.name for p in Path(__file__).parent.glob("*_triton.py"))
)
