"""Runs: reading one, listing an experiment's runs with filters and sorting, cancelling one.

Filters are expressions ``PATH OP VALUE`` with OP one of ``= != < <= > >=``: ``noise.sigma=0.1``,
``training.mode=gni``, ``summary.ece<0.05``. A value is read as JSON when it parses (numbers,
``true``, ``[0.1,0.2]``), as a string otherwise. Everything is evaluated in the database.

>>> parse_filter("summary.ece<0.05")
RunFilter(path='summary.ece', op='<', value=0.05)
>>> parse_filter("training.mode=gni")
RunFilter(path='training.mode', op='=', value='gni')
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import ColumnElement, Connection, Row, Select, Table, bindparam, false, func, select, update
from sqlalchemy.orm import Session

from gni_engine.errors import Conflict, NotFound, SpecError
from gni_service.auth import Principal
from gni_service.experiments import get_experiment, refresh_experiment
from gni_service.field_paths import resolve_path
from gni_service.json_sql import json_equals, json_number, json_text
from gni_service.models import Experiment, Run, RunStatus, utcnow
from gni_service.pagination import Page, decode_cursor, encode_cursor

Operator = Literal["=", "!=", "<", "<=", ">", ">="]
runs_table = cast(Table, Run.__table__)
experiments_table = cast(Table, Experiment.__table__)
# The polled read, built once: the run's columns and its experiment's owner, by primary key.
RUN_WITH_OWNER = (
    select(runs_table, experiments_table.c.owner.label("owner"))
    .join(experiments_table, experiments_table.c.id == runs_table.c.experiment_id)
    .where(runs_table.c.id == bindparam("run_id"))
)
# No lazy group before a trailing \s*$ (quadratic backtracking): the value is stripped in Python.
_FILTER = re.compile(r"\s*([A-Za-z0-9_.]+)\s*(!=|<=|>=|=|<|>)(.*)", re.DOTALL)
MAX_FILTERS = 20
MAX_FILTER_LENGTH = 1000
MAX_FILTER_ITEMS = 100  # elements of a list (or object) value; each one is a clause of its own
MAX_CURSOR_INT = 2**62  # positions and offsets; far beyond any sweep, within a 64-bit column


@dataclass(frozen=True)
class RunFilter:
    path: str
    op: Operator
    value: Any


def parse_filter(expression: str) -> RunFilter:
    """Read ``PATH OP VALUE``; raises :class:`SpecError` naming the expression when it is not one."""
    if len(expression) > MAX_FILTER_LENGTH:
        raise _bad_filter(expression[:60] + "...", f"at most {MAX_FILTER_LENGTH} characters")
    match = _FILTER.fullmatch(expression)
    if not match:
        raise _bad_filter(
            expression, "expected PATH OP VALUE with OP one of = != < <= > >=, e.g. summary.ece<0.05"
        )
    path, op, raw = match.group(1), match.group(2), match.group(3).strip()
    try:
        value: Any = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: a value nested ~1000 deep
        value = raw
    if isinstance(value, list | dict):
        items = value if isinstance(value, list) else list(value.values())
        if len(items) > MAX_FILTER_ITEMS or any(isinstance(item, list | dict) for item in items):
            raise _bad_filter(
                expression[:200], f"a list or object value holds at most {MAX_FILTER_ITEMS} plain values"
            )
    if op not in ("=", "!=") and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise _bad_filter(expression, f"'{op}' compares numbers but '{raw}' is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad_filter(expression, "the value must be finite")
    return RunFilter(path, op, value)  # type: ignore[arg-type]


def _bad_filter(expression: str, reason: str) -> SpecError:
    message = f"invalid filter '{expression}': {reason}"
    return SpecError(message, details=[{"loc": "filter", "msg": message}])


def filter_clause(run_filter: RunFilter, axes: Sequence[str], dialect: str) -> ColumnElement[bool]:
    path = resolve_path(run_filter.path, axes, what="filter")
    if run_filter.op == "=":
        return json_equals(path, run_filter.value, dialect)
    if run_filter.op == "!=":
        # NOT (NULL = v) is NULL in SQL: a run without the value (null, absent, another JSON type)
        # is not equal to it either, and must be kept.
        return ~func.coalesce(json_equals(path, run_filter.value, dialect), false())
    number = json_number(path, dialect)
    value = float(run_filter.value)
    comparisons: dict[str, ColumnElement[bool]] = {
        "<": number < value,
        "<=": number <= value,
        ">": number > value,
        ">=": number >= value,
    }
    return comparisons[run_filter.op]


@dataclass(frozen=True)
class RunQuery:
    filters: tuple[RunFilter, ...] = ()
    statuses: tuple[RunStatus, ...] = ()
    sort: str | None = None  # a path, '-' first for descending; None: sweep order


def select_runs(experiment: Experiment, query: RunQuery, dialect: str) -> Select[Run]:
    """The runs of ``experiment`` that pass every filter (filters combine with AND)."""
    if len(query.filters) > MAX_FILTERS:
        raise SpecError(
            f"at most {MAX_FILTERS} filters",
            details=[{"loc": "filter", "msg": f"at most {MAX_FILTERS} filters"}],
        )
    axes = experiment.axis_paths()
    statement = select(Run).where(Run.experiment_id == experiment.id)
    for run_filter in query.filters:
        statement = statement.where(filter_clause(run_filter, axes, dialect))
    if query.statuses:
        statement = statement.where(Run.status.in_([s.value for s in query.statuses]))
    return statement


def list_runs(
    session: Session, experiment_id: str, query: RunQuery, *, limit: int, cursor: str | None
) -> Page[Run]:
    """Sweep order by default (keyset on position); sorted by a value, pages by offset."""
    experiment = get_experiment(session, experiment_id)
    dialect = session.get_bind().dialect.name
    statement = select_runs(experiment, query, dialect)
    if query.sort is None:
        after = -1
        if cursor is not None:
            after = _int_field(decode_cursor(cursor, "runs"), "after")
        items = list(
            session.scalars(statement.where(Run.position > after).order_by(Run.position).limit(limit + 1))
        )
        more = len(items) > limit
        items = items[:limit]
        next_cursor = encode_cursor({"kind": "runs", "after": items[-1].position}) if more else None
        return Page(items, next_cursor)
    descending = query.sort.startswith("-")
    path = resolve_path(query.sort.removeprefix("-"), experiment.axis_paths(), what="sort")
    number, text = json_number(path, dialect), json_text(path, dialect)
    keys = (
        (number.desc().nulls_last(), text.desc()) if descending else (number.asc().nulls_last(), text.asc())
    )
    offset = _int_field(decode_cursor(cursor, "sorted_runs"), "offset") if cursor is not None else 0
    ordered = statement.order_by(*keys, Run.position).offset(offset).limit(limit + 1)
    items = list(session.scalars(ordered))
    more = len(items) > limit
    next_cursor = encode_cursor({"kind": "sorted_runs", "offset": offset + limit}) if more else None
    return Page(items[:limit], next_cursor)


def _int_field(position: dict[str, Any], name: str) -> int:
    value = position.get(name)
    # Bounded: a forged cursor's 2**70 would overflow the database driver (a 500, not a 422).
    if not isinstance(value, int) or isinstance(value, bool) or not -1 <= value <= MAX_CURSOR_INT:
        raise SpecError("invalid cursor", details=[{"loc": "cursor", "msg": "invalid cursor"}])
    return value


def get_run(session: Session, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run with id '{run_id}'")
    return run


def read_run_for(session: Session | Connection, run_id: str, principal: Principal) -> Row[Any]:
    """The run as ``principal`` sees it: one Core query, another owner's run does not exist (404).

    This is the path clients poll: a prebuilt statement, no ORM identity map, the owner joined in
    (about a third of the cost of loading the run and then its experiment). The row has the
    attribute names of :class:`Run`, plus ``owner``.
    """
    row = session.execute(RUN_WITH_OWNER, {"run_id": run_id}).first()
    if row is None or (principal.restricted and row.owner != principal.owner):
        raise NotFound(f"no run with id '{run_id}'")
    return row


def cancel_run(session: Session, run_id: str) -> Run:
    """Cancel a queued run now, ask a running one to stop; cancelling twice is harmless."""
    run = get_run(session, run_id)
    if run.status in (RunStatus.succeeded, RunStatus.failed):
        raise Conflict(
            f"run '{run_id}' has already {run.status.value}; there is nothing to cancel",
            details={"status": run.status.value},
        )
    if run.status == RunStatus.queued:
        session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.queued)
            .values(status=RunStatus.cancelled, finished_at=utcnow(), error="cancelled before it started")
        )
    session.execute(
        update(Run).where(Run.id == run_id, Run.status == RunStatus.running).values(cancel_requested=True)
    )
    session.flush()
    session.refresh(run)
    refresh_experiment(session, run.experiment_id)
    return run
