"""Doctest collection of the engine: modules that need an optional GPU stack are left out where absent."""

import importlib.util

collect_ignore: list[str] = (
    []
    if importlib.util.find_spec("triton")
    else [
        "counter_noise_triton.py",
        "counter_activation_triton.py",
        "fused_linear_triton.py",
        "folded_activation_triton.py",
    ]
)
