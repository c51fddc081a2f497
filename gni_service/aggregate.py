"""The comparison table a paper needs: a metric's mean, spread and count per group of runs.

Runs are grouped by the values of some fields (``noise.sigma``, ``training.mode``) and a metric
(``summary.test_loss``) is summarised over the remaining axes, usually the seeds. The database does
the work in one query (two passes: group means as a window, then squared deviations from them):

.. math::

    \\bar v = \\frac1n \\sum_i v_i, \\qquad
    s = \\sqrt{\\frac{1}{n-1} \\sum_i (v_i - \\bar v)^2}, \\qquad
    \\mathrm{se} = s / \\sqrt n .

>>> _stats(3, 2.0, 2.0)
MetricStats(mean=2.0, std=1.0, stderr=0.5773502691896258, n=3)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gni_engine.errors import SpecError
from gni_service.experiments import get_experiment
from gni_service.field_paths import resolve_path
from gni_service.json_sql import json_number, json_text
from gni_service.models import RunStatus
from gni_service.runs import RunQuery, select_runs

MAX_GROUP_BY = 8
MAX_METRICS = 8


@dataclass(frozen=True)
class MetricStats:
    mean: float | None
    std: float | None
    stderr: float | None
    n: int


@dataclass(frozen=True)
class AggregateGroup:
    key: dict[str, Any]
    metrics: dict[str, MetricStats]


@dataclass(frozen=True)
class Aggregate:
    group_by: list[str]
    metrics: list[str]
    groups: list[AggregateGroup]


def _stats(n: int, mean: float | None, squares: float | None) -> MetricStats:
    if n == 0 or mean is None:
        return MetricStats(None, None, None, 0)
    if n == 1 or squares is None:
        return MetricStats(float(mean), None, None, n)
    std = math.sqrt(max(float(squares), 0.0) / (n - 1))
    return MetricStats(float(mean), std, std / math.sqrt(n), n)


def aggregate_runs(
    session: Session,
    experiment_id: str,
    *,
    group_by: Sequence[str],
    metrics: Sequence[str],
    query: RunQuery | None = None,
) -> Aggregate:
    """Mean, standard deviation, standard error and n of each metric per group (succeeded runs by default)."""
    group_by, metrics = list(dict.fromkeys(group_by)), list(dict.fromkeys(metrics))  # each once
    if not metrics:
        raise SpecError(
            "name at least one metric", details=[{"loc": "metric", "msg": "name at least one metric"}]
        )
    if len(group_by) > MAX_GROUP_BY or len(metrics) > MAX_METRICS:
        message = f"at most {MAX_GROUP_BY} group_by paths and {MAX_METRICS} metrics"
        raise SpecError(message, details=[{"loc": "group_by", "msg": message}])
    experiment = get_experiment(session, experiment_id)
    axes = experiment.axis_paths()
    dialect = session.get_bind().dialect.name
    query = query or RunQuery(statuses=(RunStatus.succeeded,))
    group_paths = [resolve_path(p, axes, what="group_by") for p in group_by]
    metric_paths = [resolve_path(p, axes, what="metric") for p in metrics]
    keys = [json_text(p, dialect).label(f"g{i}") for i, p in enumerate(group_paths)]
    values = [json_number(p, dialect) for p in metric_paths]

    partition = list(keys)
    inner_columns: list[Any] = [*keys]
    for i, value in enumerate(values):
        inner_columns.append(value.label(f"v{i}"))
        inner_columns.append(func.avg(value).over(partition_by=partition or None).label(f"m{i}"))
    inner = select_runs(experiment, query, dialect).with_only_columns(*inner_columns).subquery()
    outer_columns: list[Any] = [inner.c[f"g{i}"] for i in range(len(keys))]
    for i in range(len(values)):
        v, m = inner.c[f"v{i}"], inner.c[f"m{i}"]
        outer_columns += [func.count(v), func.avg(v), func.sum((v - m) * (v - m))]
    statement = select(*outer_columns)
    if keys:
        group_columns = [inner.c[f"g{i}"] for i in range(len(keys))]
        statement = statement.group_by(*group_columns)
    groups = []
    for row in session.execute(statement):
        key = {path: _decode(row[i]) for i, path in enumerate(group_by)}
        stats = {}
        for j, name in enumerate(metrics):
            n, mean, squares = row[len(keys) + 3 * j : len(keys) + 3 * j + 3]
            stats[name] = _stats(int(n or 0), mean, squares)
        groups.append(AggregateGroup(key, stats))
    groups.sort(key=lambda group: [_sort_key(group.key[path]) for path in group_by])
    return Aggregate(list(group_by), list(metrics), groups)


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers in numeric order, then strings, then anything else by its JSON text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True))


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)
