"""Dotted paths that name a value of a run: a spec field, a sweep coordinate or a summary result.

``noise.sigma`` and ``training.mode`` name fields of the run spec (and, when the experiment sweeps
them, its coordinates); ``summary.test_loss`` names a result. Paths are checked against the spec
model so that a typo is a clear error instead of an empty answer.

>>> resolve_path("summary.ece", axes=[])
FieldPath(column='summary', keys=('ece',), text='summary.ece')
>>> resolve_path("noise.sigma", axes=["noise.sigma"])
FieldPath(column='coords', keys=('noise.sigma',), text='noise.sigma')
>>> resolve_path("noise.sigam", axes=[])
Traceback (most recent call last):
...
gni_engine.errors.SpecError: 'noise.sigam': 'sigam' is not a field of noise
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from gni_engine.errors import SpecError
from gni_engine.spec import RunSpec

Column = Literal["spec", "coords", "summary"]
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_DEPTH = 6


@dataclass(frozen=True)
class FieldPath:
    """Where a value lives: a JSON column and the keys leading to it."""

    column: Column
    keys: tuple[str, ...]
    text: str


def resolve_path(text: str, axes: Sequence[str], *, what: str = "path") -> FieldPath:
    """The :class:`FieldPath` of ``text``; raises :class:`SpecError` if it names no field."""
    parts = text.split(".")
    if len(parts) > MAX_DEPTH or not all(_KEY.match(p) for p in parts):
        raise _bad(text, what, "must be dotted field names (letters, digits, '_')")
    if parts[0] == "summary":
        if len(parts) == 1:
            raise _bad(text, what, "name a result, e.g. summary.test_loss")
        return FieldPath("summary", tuple(parts[1:]), text)
    if text in axes:
        # Sweep axes are stored as coordinates: a small document, cheaper to read than the spec.
        return FieldPath("coords", (text,), text)
    problem = _spec_path_problem(parts)
    if problem:
        raise _bad(text, what, problem)
    return FieldPath("spec", tuple(parts), text)


def _bad(text: str, what: str, message: str) -> SpecError:
    return SpecError(f"'{text}': {message}", details=[{"loc": what, "msg": f"'{text}': {message}"}])


def _spec_path_problem(parts: Sequence[str]) -> str | None:
    models: list[type[BaseModel]] = [RunSpec]
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the run spec"
        if not models:
            return f"{where} has no fields"
        annotations = [m.model_fields[part].annotation for m in models if part in m.model_fields]
        if not annotations:
            return f"'{part}' is not a field of {where}"
        models = [m for a in annotations for m in _models_in(a)]
    return None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (the members of ``data``'s and ``model``'s unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        args = typing.get_args(annotation)
        members = args[:1] if origin is typing.Annotated else args
        return [m for arg in members for m in _models_in(arg)]
    return []
