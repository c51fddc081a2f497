"""URL paths of the API's resources; ids are quoted so that no id can reach another path."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote


def _segment(value: str) -> str:
    if not value:
        raise ValueError("an id must not be empty")
    return quote(value, safe="")


def experiment_path(experiment_id: str, *rest: str) -> str:
    return "/".join(["/v1/experiments", _segment(experiment_id), *rest])


def run_path(run_id: str, *rest: str) -> str:
    return "/".join(["/v1/runs", _segment(run_id), *rest])


def artifact_path(artifact_id: str, *rest: str) -> str:
    return "/".join(["/v1/artifacts", _segment(artifact_id), *rest])


def join_list(values: str | Sequence[str] | None) -> str | None:
    """``["a", "b"]`` → ``"a,b"`` (the API's comma-separated lists); None stays None."""
    if values is None:
        return None
    return values if isinstance(values, str) else ",".join(values)


def as_list(values: str | Sequence[str] | None) -> list[str] | None:
    """A repeated query parameter's values."""
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)
