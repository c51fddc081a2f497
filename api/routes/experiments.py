"""/v1/experiments: create (or dry-run) a sweep, list, read, cancel, its runs, aggregate, artifacts."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response

from api.dependencies import Context, ReadSession, WriteSession
from api.idempotency import IdempotentRequest
from api.routes.query import filters_from_query, split_list
from api.schemas import (
    AggregateOut,
    ArtifactList,
    ArtifactOut,
    ErrorBody,
    ExperimentCreate,
    ExperimentDeleted,
    ExperimentOut,
    ExperimentPage,
    ExperimentPlanOut,
    RunOut,
    RunPage,
)
from api.security import CurrentPrincipal
from gni_engine.errors import SpecError
from gni_engine.sweep import SweepSpec
from gni_service.aggregate import aggregate_runs
from gni_service.artifacts import list_experiment_artifacts
from gni_service.auth import check_experiment_owner
from gni_service.deletion import delete_experiment_records, delete_in_background
from gni_service.experiments import (
    ExperimentQuery,
    cancel_experiment,
    create_experiment,
    experiment_progress,
    get_experiment,
    list_experiments,
    plan_experiment,
)
from gni_service.limits import check_active_runs, check_sweep
from gni_service.models import RunStatus
from gni_service.runs import RunQuery, list_runs

log = logging.getLogger("api.experiments")
router = APIRouter(tags=["experiments"])
NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorBody, "description": "No such experiment."}
}
SUMMARY_METRICS = (
    "summary.train_loss",
    "summary.test_loss",
    "summary.R_total",
    "summary.accuracy",
    "summary.ece",
)
RUN_QUERY_PARAMS = ("status", "sort", "limit", "cursor", "filter")
AGGREGATE_PARAMS = ("group_by", "metric", "status", "filter")

Limit = Annotated[int, Query(ge=1, description="Items per page (at most GNI_MAX_PAGE_SIZE, default 500).")]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page.")]


def _sweep_of(body: ExperimentCreate) -> tuple[SweepSpec, str, str | None]:
    if body.preset is not None:
        from gni_service.presets import sweep_from_preset

        overrides = body.overrides
        sweep = sweep_from_preset(
            body.preset,
            steps=overrides.steps if overrides else None,
            seeds=overrides.seeds if overrides else None,
            variant=overrides.variant if overrides else None,
            axes=overrides.axes if overrides else None,
        )
        return sweep, body.name or body.preset, body.preset
    return body.sweep(), body.name or "experiment", None


@router.post(
    "/experiments",
    status_code=202,
    response_model=ExperimentOut | ExperimentPlanOut,
    responses={
        200: {"model": ExperimentPlanOut, "description": "dry_run=true: the expansion, nothing stored."},
        202: {
            "model": ExperimentOut,
            "description": "Stored and queued; Location names the experiment.",
            "headers": {
                "Location": {"description": "URL of the new experiment", "schema": {"type": "string"}}
            },
        },
        409: {"model": ErrorBody, "description": "The Idempotency-Key was used for another request."},
    },
    summary="Create an experiment from a sweep or a preset",
)
def create_experiment_route(
    body: Annotated[ExperimentCreate, Body()],
    response: Response,
    session: WriteSession,
    context: Context,
    principal: CurrentPrincipal,
    idempotency: IdempotentRequest,
    dry_run: Annotated[bool, Query(description="Only expand and plan; store nothing.")] = False,
) -> ExperimentOut | ExperimentPlanOut | Response:
    sweep, name, preset = _sweep_of(body)
    max_runs = context.settings.max_sweep_runs
    check_sweep(sweep, context.settings)
    if dry_run:
        response.status_code = 200
        return ExperimentPlanOut.of(plan_experiment(sweep, max_runs=max_runs))
    if not body.reuse_results:  # refused before anything is written
        check_active_runs(session, principal.owner, sweep.size(), context.settings)
    experiment, batch_keys = create_experiment(
        session,
        sweep,
        name=name,
        max_runs=max_runs,
        preset=preset,
        owner=principal.owner,
        reuse_results=body.reuse_results,
        run_figures=body.run_figures,
    )
    if body.reuse_results:  # only the runs left to train count; a 429 rolls the creation back
        check_active_runs(session, principal.owner, experiment.n_queued, context.settings, stored=True)
    out = ExperimentOut.of(experiment)
    replayed = idempotency.commit(202, out)
    if replayed is not None:
        return replayed  # a concurrent twin of this request stored the experiment first
    context.executor.enqueue(batch_keys)
    response.headers["Location"] = f"/v1/experiments/{experiment.id}"
    return out


@router.get("/experiments", response_model=ExperimentPage, summary="List experiments, newest first")
def list_experiments_route(
    session: ReadSession,
    principal: CurrentPrincipal,
    context: Context,
    status: Annotated[RunStatus | None, Query(description="Only experiments in this status.")] = None,
    name: Annotated[str | None, Query(max_length=200, description="Only experiments of this name.")] = None,
    created_after: Annotated[datetime | None, Query(description="Created at or after (ISO 8601).")] = None,
    created_before: Annotated[datetime | None, Query(description="Created before (ISO 8601).")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ExperimentPage:
    after, before = _aware(created_after, "created_after"), _aware(created_before, "created_before")
    query = ExperimentQuery(status, name, after, before, principal.owner)
    page = list_experiments(session, query, limit=_page_size(limit, context), cursor=cursor)
    return ExperimentPage(items=[ExperimentOut.of(e) for e in page.items], next_cursor=page.next_cursor)


def _page_size(limit: int, context: Context) -> int:
    """``limit`` unless it exceeds the configured ``GNI_MAX_PAGE_SIZE`` (a 422 naming the maximum)."""
    most = context.settings.max_page_size
    if limit > most:
        message = f"limit: at most {most} items a page (GNI_MAX_PAGE_SIZE)"
        raise SpecError(message, details=[{"loc": "limit", "msg": message}])
    return limit


def _aware(moment: datetime | None, loc: str) -> datetime | None:
    """In UTC (naive: taken as UTC); a moment UTC cannot hold (9999-12-31T23:59-05:00) is a 422."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        message = f"{loc}: {moment.isoformat()} is outside the years 1-9999 in UTC"
        raise SpecError(message, details=[{"loc": loc, "msg": message}]) from None


@router.get(
    "/experiments/{experiment_id}",
    response_model=ExperimentOut,
    responses=NOT_FOUND,
    summary="One experiment: counts by status, progress, summary",
)
def get_experiment_route(
    experiment_id: str, session: ReadSession, principal: CurrentPrincipal
) -> ExperimentOut:
    check_experiment_owner(session, experiment_id, principal)
    experiment = get_experiment(session, experiment_id)
    summary = aggregate_runs(session, experiment_id, group_by=[], metrics=SUMMARY_METRICS)
    return ExperimentOut.of(experiment, experiment_progress(session, experiment_id), summary)


@router.post(
    "/experiments/{experiment_id}/cancel",
    response_model=ExperimentOut,
    responses={
        **NOT_FOUND,
        409: {"model": ErrorBody, "description": "The experiment already succeeded or failed."},
    },
    summary="Cancel an experiment (queued runs now, running ones between two steps)",
)
def cancel_experiment_route(
    experiment_id: str, session: WriteSession, principal: CurrentPrincipal, idempotency: IdempotentRequest
) -> ExperimentOut | Response:
    check_experiment_owner(session, experiment_id, principal)
    out = ExperimentOut.of(cancel_experiment(session, experiment_id))
    return idempotency.commit(200, out) or out


@router.delete(
    "/experiments/{experiment_id}",
    response_model=ExperimentDeleted,
    responses={
        **NOT_FOUND,
        409: {"model": ErrorBody, "description": "Still queued or running, or its figures are being drawn."},
    },
    summary="Delete a finished experiment: its runs, metric series, artifact records and unshared objects",
)
def delete_experiment_route(
    experiment_id: str, session: WriteSession, context: Context, principal: CurrentPrincipal
) -> ExperimentDeleted:
    check_experiment_owner(session, experiment_id, principal)
    deleted = delete_experiment_records(session, experiment_id)
    session.commit()
    label = f"deleted experiment {experiment_id}"
    log.info("%s: %d runs, %d artifact records", label, deleted.runs, deleted.artifacts)
    delete_in_background(context.store, deleted.orphaned_keys, label)  # minutes for a large sweep
    return ExperimentDeleted(
        id=experiment_id,
        runs=deleted.runs,
        artifacts=deleted.artifacts,
        objects_to_delete=len(deleted.orphaned_keys),
    )


@router.get(
    "/experiments/{experiment_id}/runs",
    response_model=RunPage,
    responses=NOT_FOUND,
    summary="An experiment's runs, filtered and sorted",
    description=(
        "Filters are `PATH OP VALUE` with OP one of `= != < <= > >=`, given as repeated `filter` "
        "parameters or directly in the query string: `?noise.sigma=0.1&summary.ece<0.05`. PATH is a "
        "spec field (`training.mode`, `noise.sigma`, `seed`) or a result (`summary.test_loss`). Filters "
        "combine with AND. Sweep order by default; `sort=summary.test_loss` (or `-…` for descending)."
    ),
)
def list_runs_route(
    experiment_id: str,
    request: Request,
    session: ReadSession,
    principal: CurrentPrincipal,
    context: Context,
    status: Annotated[list[RunStatus] | None, Query(description="Only runs in these statuses.")] = None,
    sort: Annotated[
        str | None, Query(max_length=200, description="A path; '-' first for descending.")
    ] = None,
    filter: Annotated[  # noqa: A002 - the public parameter's name
        list[str] | None, Query(description="PATH OP VALUE, e.g. summary.ece<0.05 (repeatable).")
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> RunPage:
    check_experiment_owner(session, experiment_id, principal)
    query = RunQuery(filters_from_query(request, RUN_QUERY_PARAMS), tuple(status or ()), sort)
    page = list_runs(session, experiment_id, query, limit=_page_size(limit, context), cursor=cursor)
    return RunPage(items=[RunOut.of(r) for r in page.items], next_cursor=page.next_cursor)


@router.get(
    "/experiments/{experiment_id}/aggregate",
    response_model=AggregateOut,
    responses=NOT_FOUND,
    summary="Mean, std, stderr and n of metrics per group, computed in the database",
    description=(
        "Groups the runs by the values of `group_by` paths (comma-separated, e.g. "
        "`noise.sigma,training.mode`) and summarises each `metric` (e.g. `summary.test_loss`) over the "
        "remaining axes, usually the seeds. Succeeded runs only unless `status` says otherwise; the "
        "runs filters of `/runs` apply too."
    ),
)
def aggregate_route(
    experiment_id: str,
    request: Request,
    session: ReadSession,
    principal: CurrentPrincipal,
    metric: Annotated[list[str], Query(description="summary.X paths, comma-separated or repeated.")],
    group_by: Annotated[list[str] | None, Query(description="Paths, comma-separated or repeated.")] = None,
    status: Annotated[list[RunStatus] | None, Query(description="Default: succeeded.")] = None,
    filter: Annotated[list[str] | None, Query(description="As for /runs.")] = None,  # noqa: A002
) -> AggregateOut:
    check_experiment_owner(session, experiment_id, principal)
    statuses = tuple(status or (RunStatus.succeeded,))
    query = RunQuery(filters_from_query(request, AGGREGATE_PARAMS), statuses)
    aggregate = aggregate_runs(
        session, experiment_id, group_by=split_list(group_by), metrics=split_list(metric), query=query
    )
    return AggregateOut.of(experiment_id, aggregate)


@router.get(
    "/experiments/{experiment_id}/artifacts",
    response_model=ArtifactList,
    responses=NOT_FOUND,
    summary="An experiment's artifacts (comparison figures; with include_runs, its runs' too)",
)
def experiment_artifacts_route(
    experiment_id: str,
    session: ReadSession,
    principal: CurrentPrincipal,
    context: Context,
    include_runs: Annotated[bool, Query(description="Also list every run's artifacts.")] = False,
    limit: Annotated[
        int | None, Query(ge=1, description="Items per page (default and most: GNI_MAX_PAGE_SIZE).")
    ] = None,
    cursor: Cursor = None,
) -> ArtifactList:
    check_experiment_owner(session, experiment_id, principal)
    get_experiment(session, experiment_id)
    size = context.settings.max_page_size if limit is None else _page_size(limit, context)
    page = list_experiment_artifacts(
        session, experiment_id, include_runs=include_runs, limit=size, cursor=cursor
    )
    return ArtifactList(items=[ArtifactOut.of(a) for a in page.items], next_cursor=page.next_cursor)
