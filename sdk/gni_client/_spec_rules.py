"""The run spec's checks that a JSON schema cannot say, mirrored from the server's validators.

Each rule receives the schema-valid, coerced value of one model (defaults filled in) and returns
``(relative path, message)`` pairs worded as the server words them. ``tests/sdk/test_spec_parity.py``
feeds the same invalid specs to these rules and to the server and requires identical errors, so a
change on one side that is not made on the other fails the suite.
"""

from __future__ import annotations

import math
from typing import Any

from gni_client._schema import FieldRule

Problems = list[tuple[str, str]]

MAX_SWEEP_RUNS = 100_000
CLASSIFICATION_DATA = frozenset(
    {"two_moons", "circles", "digits", "mnist", "fashion_mnist", "cifar10", "svhn"}
)
IMAGE_DATA = frozenset({"mnist", "fashion_mnist", "cifar10", "svhn"})


def _float_text(value: float) -> str:
    return repr(float(value))


def noise_sigma(value: Any) -> Problems:
    values = value if isinstance(value, list) else [value]
    for s in values:
        if not math.isfinite(s) or s < 0:
            return [("", f"sigma must be finite and >= 0, got {_float_text(s)}")]
        if s > 100:
            return [("", f"sigma must be <= 100, got {_float_text(s)}")]
    return []


def noise_layers(value: Any) -> Problems:
    if isinstance(value, list):
        if any(i < 0 for i in value):
            return [("", "noise layer indices must be >= 0")]
        if len(set(value)) != len(value):
            return [("", "noise layer indices must be distinct")]
    return []


def sinusoids_data(data: dict[str, Any]) -> Problems:
    frequencies = data["frequencies"]
    k = len(frequencies)
    if any(not math.isfinite(f) or f < 0 for f in frequencies):
        return [("", "frequencies must be finite and >= 0")]
    amplitudes, phases = data["amplitudes"], data["phases"]
    if amplitudes is not None and len(amplitudes) != k:
        return [("", f"amplitudes has {len(amplitudes)} values for {k} frequencies")]
    if amplitudes is not None and any(not math.isfinite(a) or a == 0 for a in amplitudes):
        return [("", "amplitudes must be finite and non-zero (A_K = 0 leaves frequency K out)")]
    if isinstance(phases, list) and len(phases) != k:
        return [("", f"phases has {len(phases)} values for {k} frequencies")]
    top = float(max(frequencies))
    if data["dim"] == 1 and top >= data["n_points"] / 2:
        n = data["n_points"]
        return [("", f"frequency {top} Hz is at or above the Nyquist limit {n / 2} Hz of {n} points")]
    return []


def _injection_points(model: dict[str, Any]) -> int:
    return 3 if model.get("kind") == "convnet" else 1 + len(model["hidden"])


def run_spec(spec: dict[str, Any]) -> Problems:
    data, model, noise = spec["data"], spec["model"], spec["noise"]
    name = data["name"]
    is_classification = name in CLASSIFICATION_DATA
    if spec["task"] == "classification" and not is_classification:
        return [("task", f"data '{name}' is a regression data set but task is 'classification'")]
    if spec["task"] == "regression" and is_classification:
        return [("task", f"data '{name}' is a classification data set but task is 'regression'")]
    is_image = name in IMAGE_DATA
    if model.get("kind") == "convnet" and not (is_image and not data["flatten"]):
        return [("model.kind", "'convnet' needs image data with data.flatten=false")]
    if is_image and not data["flatten"] and model.get("kind") == "mlp":
        return [("data.flatten", "model 'mlp' needs flattened inputs: set data.flatten=true")]
    points = _injection_points(model)
    sigma, layers = noise["sigma"], noise["layers"]
    if isinstance(sigma, list) and len(sigma) != points:
        return [
            (
                "noise.sigma",
                f"{len(sigma)} values given but the model has {points} injection points "
                f"(the input and {points - 1} hidden layers)",
            )
        ]
    if isinstance(layers, list) and layers and max(layers) >= points:
        return [
            ("noise.layers", f"layer {max(layers)} named but the model has injection points 0..{points - 1}")
        ]
    return []


def axis_path_problem(path: str, schema: dict[str, Any]) -> str | None:
    """Why ``path`` names no field of the run spec (unions accept any member's field), or None."""
    defs = schema["$defs"]
    parts = path.split(".")
    node: dict[str, Any] | None = defs["RunSpec"]
    for i, part in enumerate(parts):
        properties = node.get("properties") if node is not None else None
        if properties is None or part not in properties:
            where = ".".join(parts[:i]) or "the run spec"
            return f"axis '{path}': '{part}' is not a field of {where}"
        ref = properties[part].get("$ref")
        node = defs[ref.rsplit("/", 1)[-1]] if isinstance(ref, str) else None
        if node is None and i < len(parts) - 1:
            return None
    return None


def sweep_axes(schema: dict[str, Any]) -> FieldRule:
    def check(axes: dict[str, list[Any]]) -> Problems:
        for path, values in axes.items():
            if not values:
                return [("", f"axis '{path}' has no values")]
            problem = axis_path_problem(path, schema)
            if problem:
                return [("", problem)]
        size = math.prod(len(values) for values in axes.values())
        if size > MAX_SWEEP_RUNS:
            return [
                (
                    "",
                    f"the sweep expands to {size} runs; no sweep may hold more than {MAX_SWEEP_RUNS} "
                    "(a service may accept fewer: its GNI_MAX_SWEEP_RUNS)",
                )
            ]
        return []

    return check


FIELD_RULES: dict[str, FieldRule] = {"NoiseSpec.sigma": noise_sigma, "NoiseSpec.layers": noise_layers}
MODEL_RULES: dict[str, FieldRule] = {"SinusoidsData": sinusoids_data, "RunSpec": run_spec}
