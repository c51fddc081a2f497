"""Presets (the paper's experiments, defined by the engine) as sweeps, with a researcher's overrides."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from gni_engine.errors import SpecError
from gni_engine.spec import spec_error_from
from gni_engine.sweep import SweepSpec


def sweep_from_preset(
    name: str,
    *,
    steps: int | None = None,
    seeds: int | None = None,
    variant: str | None = None,
    axes: dict[str, list[Any]] | None = None,
) -> SweepSpec:
    """The preset's sweep, scaled by ``steps`` and ``seeds``, with ``axes`` replacing or adding axes.

    A bad name or variant names ``preset``/``overrides.variant``; a bad axis names ``overrides.axes``.
    """
    from gni_engine.presets import get_preset

    try:
        sweep = get_preset(name, steps=steps, seeds=seeds, variant=variant)
    except SpecError as error:
        loc = "overrides.variant" if "variant" in error.message else "preset"
        raise SpecError(error.message, details=[{"loc": loc, "msg": error.message}]) from None
    if not axes:
        return sweep
    try:
        return SweepSpec(base=sweep.base, axes={**sweep.axes, **axes})
    except ValidationError as error:
        raise spec_error_from(error, "preset overrides", prefix="overrides") from None
