"""Metric series of runs: written in bulk while a run trains, read back downsampled.

Downsampling keeps every k-th recorded point of a series (k chosen so that at most ``max_points``
remain) plus its last point, so a curve keeps its shape and its final value; the database picks the
rows with a window function.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.orm import Session

from gni_service.models import MetricPoint

MAX_NAMES = 64


@dataclass(frozen=True)
class MetricSeries:
    name: str
    steps: list[int]
    values: list[float | None]


def finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def insert_metric_points(session: Session, run_id: str, rows: Iterable[tuple[str, int, float]]) -> int:
    """One multi-row insert of ``(name, step, value)`` rows; non-finite values are stored as NULL."""
    payload = [{"run_id": run_id, "name": n, "step": int(s), "value": finite_or_none(v)} for n, s, v in rows]
    if payload:
        session.execute(insert(MetricPoint), payload)
    return len(payload)


def metric_names(session: Session, run_id: str) -> list[str]:
    statement = (
        select(MetricPoint.name).where(MetricPoint.run_id == run_id).distinct().order_by(MetricPoint.name)
    )
    return list(session.scalars(statement))


def read_metric_series(
    session: Session,
    run_id: str,
    *,
    names: Sequence[str] | None = None,
    step_from: int | None = None,
    step_to: int | None = None,
    max_points: int = 1000,
) -> list[MetricSeries]:
    """Each named series (all when ``names`` is None) between the steps, at most ``max_points`` each."""
    where = [MetricPoint.run_id == run_id]
    if names:
        where.append(MetricPoint.name.in_(list(names)))
    if step_from is not None:
        where.append(MetricPoint.step >= step_from)
    if step_to is not None:
        where.append(MetricPoint.step <= step_to)
    ranked = (
        select(
            MetricPoint.name,
            MetricPoint.step,
            MetricPoint.value,
            MetricPoint.id,
            (
                func.row_number().over(
                    partition_by=MetricPoint.name, order_by=(MetricPoint.step, MetricPoint.id)
                )
                - 1
            ).label("index_in_series"),
            func.count().over(partition_by=MetricPoint.name).label("series_length"),
        )
        .where(*where)
        .subquery()
    )
    if max_points < 2:
        raise ValueError("max_points must be at least 2 (the first and the last point)")
    # Every stride-th point and the last: at most (max_points - 1) + 1 points for
    # stride = ceil(n / (max_points - 1)), computed in integers.
    n, rank = ranked.c.series_length, ranked.c.index_in_series
    stride = (n + (max_points - 2)) // (max_points - 1)
    keep = or_(n <= max_points, rank % stride == 0, rank == n - 1)
    statement = (
        select(ranked.c.name, ranked.c.step, ranked.c.value)
        .where(and_(keep))
        .order_by(ranked.c.name, ranked.c.step, ranked.c.id)
    )
    series: dict[str, MetricSeries] = {}
    for name, step, value in session.execute(statement):
        entry = series.setdefault(name, MetricSeries(name, [], []))
        entry.steps.append(int(step))
        entry.values.append(None if value is None else float(value))
    return list(series.values())
