"""Sweeps: a base run spec and a grid of axes over any of its fields, expanded into runs.

An axis is a dotted path into :class:`~gni_engine.spec.RunSpec` (``noise.sigma``, ``training.mode``,
``seed``) with a list of values; the sweep is their Cartesian product, in axis order.

>>> sweep = SweepSpec.model_validate(
...     {"base": {"task": "regression"}, "axes": {"training.mode": ["baseline", "gni"], "seed": [0, 1]}})
>>> [coords for coords, _ in expand_sweep(sweep)]  # doctest: +NORMALIZE_WHITESPACE
[{'training.mode': 'baseline', 'seed': 0}, {'training.mode': 'baseline', 'seed': 1},
 {'training.mode': 'gni', 'seed': 0}, {'training.mode': 'gni', 'seed': 1}]
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from gni_engine.errors import SpecError
from gni_engine.spec import Frozen, RunSpec, canonical_json, format_validation_error, spec_error_from

MAX_SWEEP_RUNS = 100_000
Coordinates = dict[str, Any]


class SweepSpec(Frozen):
    """A base run and the axes of a grid over its fields (``{"noise.sigma": [0.0, 0.1]}``)."""

    base: RunSpec = Field(default_factory=RunSpec)
    axes: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("axes")
    @classmethod
    def _axes_valid(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in axes.items():
            if not values:
                raise ValueError(f"axis '{path}' has no values")
            _check_path(path)
        for path in axes:
            inner = next((other for other in axes if other.startswith(path + ".")), None)
            if inner is not None:
                raise ValueError(
                    f"axes '{path}' and '{inner}' overlap: each run's '{path}' would replace the "
                    f"'{inner}' value it is labelled with; sweep one of them"
                )
        size = 1
        for values in axes.values():
            size *= len(values)
        if size > MAX_SWEEP_RUNS:
            raise ValueError(
                f"the sweep expands to {size} runs; no sweep may hold more than {MAX_SWEEP_RUNS} "
                "(a service may accept fewer: its GNI_MAX_SWEEP_RUNS)"
            )
        return axes

    def size(self) -> int:
        n = 1
        for values in self.axes.values():
            n *= len(values)
        return n

    def spec_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()


def _check_path(path: str) -> None:
    parts = path.split(".")
    model: Any = RunSpec
    for i, part in enumerate(parts):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            where = ".".join(parts[:i]) or "the run spec"
            raise ValueError(f"axis '{path}': '{part}' is not a field of {where}")
        annotation = fields[part].annotation
        model = annotation if isinstance(annotation, type) and hasattr(annotation, "model_fields") else None
        if model is None and i < len(parts) - 1:
            # Unions (data, model): accept any member's field; the expanded spec validates it.
            return


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``path == "a.b.c"``, creating mappings on the way."""
    *heads, last = path.split(".")
    node = data
    for head in heads:
        child = node.get(head)
        if not isinstance(child, dict):
            child = {}
            node[head] = child
        node = child
    node[last] = value


def get_path(data: Any, path: str) -> Any:
    node = data
    for part in path.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def expand_sweep(sweep: SweepSpec) -> list[tuple[Coordinates, RunSpec]]:
    """Every run of the grid with its coordinates; raises :class:`SpecError` naming the bad axis value."""
    base = sweep.base.model_dump(mode="json")
    paths = list(sweep.axes)
    runs: list[tuple[Coordinates, RunSpec]] = []
    for combo in itertools.product(*(range(len(sweep.axes[p])) for p in paths)):
        data = copy.deepcopy(base)
        coords = {p: sweep.axes[p][i] for p, i in zip(paths, combo, strict=True)}
        for p, value in coords.items():
            set_path(data, p, value)
        try:
            spec = RunSpec.model_validate(data)
        except ValidationError as error:
            where = ", ".join(f"{p}={json.dumps(v)}" for p, v in coords.items())
            details = format_validation_error(error)
            lines = "; ".join(f"{d['loc']}: {d['msg']}" for d in details)
            raise SpecError(
                f"invalid sweep: the run at {where} is invalid: {lines}", details=details
            ) from None
        # The coordinates a run is filtered, sorted and grouped by are the values it trains with
        # ("1e-3" from YAML is the number 0.001), not the raw axis values.
        dumped = spec.model_dump(mode="json")
        runs.append(({p: get_path(dumped, p) for p in coords}, spec))
    return runs


def parse_sweep_spec(data: Any) -> SweepSpec:
    """A sweep from a mapping; a plain run spec (no ``base``/``axes``) becomes a one-run sweep."""
    if isinstance(data, dict) and ("base" in data or "axes" in data):
        try:
            return SweepSpec.model_validate(data)
        except ValidationError as error:
            raise spec_error_from(error, "sweep spec") from None
    try:
        return SweepSpec(base=RunSpec.model_validate(data))
    except ValidationError as error:
        raise spec_error_from(error) from None


def load_spec_file(path: str | Path) -> SweepSpec:
    """Read a run or sweep spec from YAML or JSON (by extension; YAML otherwise)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as error:
        raise SpecError(f"cannot read spec file {p}: {error.strerror}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpecError(f"{p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {error}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{p} must hold a mapping (a run spec or a sweep with 'base' and 'axes')")
    return parse_sweep_spec(data)
