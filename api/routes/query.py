"""Reading the run filters of a query string.

Filters come as repeated ``filter=PATH OP VALUE`` parameters or written straight into the query
string: ``?noise.sigma=0.1&summary.ece<0.05&training.mode!=baseline``. In the second form the URL
parser splits at the first ``=``, so the expression is put back together here.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import Request

from gni_service.runs import RunFilter, parse_filter

_OPERATOR_CHARS = ("<", ">", "!", "=")


def expressions_from_query(request: Request, known: Iterable[str]) -> list[str]:
    """Every filter expression of the query string: ``filter`` values and unknown parameters."""
    reserved = set(known)
    expressions = []
    for key, value in request.query_params.multi_items():
        if key == "filter":
            expressions.append(value)
        elif key not in reserved:
            bare = value == "" and any(c in key for c in _OPERATOR_CHARS)
            expressions.append(key if bare else f"{key}={value}")
    return expressions


def filters_from_query(request: Request, known: Iterable[str]) -> tuple[RunFilter, ...]:
    return tuple(parse_filter(expression) for expression in expressions_from_query(request, known))


def split_list(values: list[str] | None) -> list[str]:
    """``a,b`` and repeated parameters alike, blanks dropped."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]
