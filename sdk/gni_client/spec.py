"""Typed run specs and sweeps, checked on the client with the server's rules before any request.

The types (:class:`RunSpec`, :class:`NoiseSpec`, … as ``TypedDict``) and the checks both come from
the server's JSON schema of its spec models, shipped with this package and compared with the live
service's OpenAPI document by the test suite, so they cannot drift apart. A wrong field fails here
with the path and the wording the server would use:

>>> spec = run_spec(data={"n_points": 64, "frequencies": [1, 3]}, model={"hidden": [16, 16]})
>>> spec["model"]
{'hidden': [16, 16]}
>>> try:
...     run_spec(noise={"sigma": -1.0})
... except SpecValidationError as error:
...     print(error.errors)
[{'loc': 'noise.sigma', 'msg': 'sigma must be finite and >= 0, got -1.0'}]
>>> with_values(spec, {"training.steps": 20})["training"]
{'steps': 20}
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any, Unpack, cast

from gni_client._exceptions import FieldError, SpecValidationError
from gni_client._schema import SchemaValidator
from gni_client._spec_rules import FIELD_RULES, MODEL_RULES, sweep_axes
from gni_client._spec_types import (
    AnalysesSpec,
    BostonData,
    CirclesData,
    ConvNetSpec,
    DataSpec,
    DiabetesData,
    DigitsData,
    ExecutionSpec,
    ImageData,
    MLPSpec,
    ModelSpec,
    NoiseSpec,
    RunSpec,
    SinusoidsData,
    SweepSpec,
    TrainingSpec,
    TwoMoonsData,
)

__all__ = [
    "AnalysesSpec",
    "BostonData",
    "CirclesData",
    "ConvNetSpec",
    "DataSpec",
    "DiabetesData",
    "DigitsData",
    "ExecutionSpec",
    "ImageData",
    "MLPSpec",
    "ModelSpec",
    "NoiseSpec",
    "RunSpec",
    "SinusoidsData",
    "SweepSpec",
    "TrainingSpec",
    "TwoMoonsData",
    "check_experiment",
    "expand_sweep",
    "run_spec",
    "spec_schema",
    "sweep",
    "validate_run_spec",
    "validate_sweep",
    "with_values",
]

MAX_CLIENT_EXPANSION = 10_000
"""Sweeps up to this many runs are expanded and every run checked on the client; larger ones only
have their base and axes checked here (the server checks every run)."""


@cache
def spec_schema() -> dict[str, Any]:
    """The server's JSON schema of :class:`SweepSpec` (every spec model under ``$defs``)."""
    text = resources.files("gni_client").joinpath("_spec_schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validators() -> tuple[SchemaValidator, SchemaValidator, SchemaValidator]:
    schema = spec_schema()
    run = SchemaValidator(
        {"$ref": "#/$defs/RunSpec", "$defs": schema["$defs"]},
        field_rules=FIELD_RULES,
        model_rules=MODEL_RULES,
    )
    shape = SchemaValidator(schema, field_rules=FIELD_RULES, model_rules=MODEL_RULES)
    axes = {f"{schema.get('title', 'SweepSpec')}.axes": sweep_axes(schema)}
    full = SchemaValidator(schema, field_rules={**FIELD_RULES, **axes}, model_rules=MODEL_RULES)
    return run, shape, full


def _fail(what: str, errors: list[FieldError]) -> SpecValidationError:
    lines = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
    return SpecValidationError(f"{what}: {lines}", errors)


def validate_run_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec with every default filled in, as the server reads it; raises :class:`SpecValidationError`."""
    value, errors = _validators()[0].validate(spec)
    if errors:
        raise _fail("invalid run spec", errors)
    return cast(dict[str, Any], value)


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """``data[a][b][c] = value`` for ``path == "a.b.c"``, creating mappings on the way."""
    *heads, last = path.split(".")
    node = data
    for head in heads:
        child = node.get(head)
        if not isinstance(child, dict):
            child = {}
            node[head] = child
        node = child
    node[last] = value


def with_values(spec: Mapping[str, Any], values: Mapping[str, Any]) -> RunSpec:
    """A copy of ``spec`` with dotted paths set (``{"training.steps": 20, "noise.sigma": 0.3}``)."""
    out = copy.deepcopy(dict(spec))
    for path, value in values.items():
        set_path(out, path, value)
    return cast(RunSpec, out)


def expand_sweep(
    base: Mapping[str, Any], axes: Mapping[str, Sequence[Any]]
) -> list[tuple[dict[str, Any], RunSpec]]:
    """Every run of the grid (Cartesian product in axis order) with its coordinates, each checked."""
    full_base = validate_run_spec(base)
    paths = list(axes)
    runs: list[tuple[dict[str, Any], RunSpec]] = []
    for combo in itertools.product(*(range(len(axes[p])) for p in paths)):
        coords = {p: axes[p][i] for p, i in zip(paths, combo, strict=True)}
        data = copy.deepcopy(full_base)
        for path, value in coords.items():
            set_path(data, path, value)
        value, errors = _validators()[0].validate(data)
        if errors:
            where = ", ".join(f"{p}={json.dumps(v)}" for p, v in coords.items())
            raise _fail(f"invalid sweep: the run at {where} is invalid", errors)
        runs.append((coords, cast(RunSpec, value)))
    return runs


def validate_sweep(base: Mapping[str, Any], axes: Mapping[str, Sequence[Any]]) -> int:
    """Check a sweep as the server does (base, axes, then every run); returns its run count."""
    _, errors = _validators()[2].validate({"base": base, "axes": axes})
    if errors:
        raise _fail("invalid sweep spec", errors)
    return _check_runs(base, axes)


def _check_runs(base: Mapping[str, Any], axes: Mapping[str, Sequence[Any]]) -> int:
    size = 1
    for values in axes.values():
        size *= len(values)
    if axes and size <= MAX_CLIENT_EXPANSION:
        expand_sweep(base, axes)
    return size


def check_experiment(base: Mapping[str, Any], axes: Mapping[str, Sequence[Any]]) -> int:
    """Check the body of ``POST /v1/experiments`` with the server's paths (``base.noise.sigma``)."""
    _, errors = _validators()[1].validate({"base": base, "axes": axes})
    if errors:
        raise _fail("invalid request", errors)
    _, errors = _validators()[2].validate({"base": base, "axes": axes})
    if errors:
        raise _fail("invalid sweep spec", errors)
    return _check_runs(base, axes)


def run_spec(**fields: Unpack[RunSpec]) -> RunSpec:
    """A run spec from its parts, checked now (only what you give is kept; the server fills defaults)."""
    validate_run_spec(fields)
    return fields


def sweep(base: RunSpec, axes: Mapping[str, Sequence[Any]]) -> SweepSpec:
    """A sweep (``base`` and grid ``axes``), checked now, every expanded run included."""
    validate_sweep(base, axes)
    return {"base": base, "axes": {path: list(values) for path, values in axes.items()}}
