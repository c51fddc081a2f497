"""/v1/runs/{id}: a run's cancellation, its metric series and its artifacts (reading one: ``run_poll``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.dependencies import ReadSession, WriteSession
from api.idempotency import IdempotentRequest
from api.routes.query import split_list
from api.schemas import ArtifactList, ArtifactOut, ErrorBody, MetricsOut, RunOut
from api.security import CurrentPrincipal
from gni_service.artifacts import list_run_artifacts
from gni_service.auth import check_run_owner
from gni_service.metrics import MAX_NAMES, metric_names, read_metric_series
from gni_service.runs import cancel_run, get_run

router = APIRouter(tags=["runs"])
MAX_STEP = 2**31 - 1  # the step column's range; larger bounds would overflow the database driver
NOT_FOUND: dict[int | str, dict[str, object]] = {404: {"model": ErrorBody, "description": "No such run."}}


@router.post(
    "/runs/{run_id}/cancel",
    response_model=RunOut,
    responses={**NOT_FOUND, 409: {"model": ErrorBody, "description": "The run already succeeded or failed."}},
    summary="Cancel one run (now if queued, between two steps if running)",
)
def cancel_run_route(
    run_id: str, session: WriteSession, principal: CurrentPrincipal, idempotency: IdempotentRequest
) -> RunOut | Response:
    check_run_owner(session, run_id, principal)
    out = RunOut.of(cancel_run(session, run_id))
    return idempotency.commit(200, out) or out


@router.get(
    "/runs/{run_id}/metrics",
    response_model=MetricsOut,
    responses=NOT_FOUND,
    summary="A run's metric series, downsampled",
    description=(
        "Series recorded over training (`train_loss`, `test_loss`, `R_total`, `R_layer_k`, spectra, "
        "layer norms …). Each series keeps at most `max_points` points: every k-th and the last."
    ),
)
def run_metrics_route(
    run_id: str,
    session: ReadSession,
    principal: CurrentPrincipal,
    names: Annotated[
        list[str] | None, Query(description="Series names, comma-separated; default all.")
    ] = None,
    step_from: Annotated[
        int | None, Query(alias="from", ge=0, le=MAX_STEP, description="First step (inclusive).")
    ] = None,
    step_to: Annotated[
        int | None, Query(alias="to", ge=0, le=MAX_STEP, description="Last step (inclusive).")
    ] = None,
    max_points: Annotated[int, Query(ge=2, le=100_000, description="Points per series at most.")] = 1000,
) -> MetricsOut:
    get_run(session, run_id)
    check_run_owner(session, run_id, principal)
    wanted = split_list(names)[:MAX_NAMES] or None
    series = read_metric_series(
        session, run_id, names=wanted, step_from=step_from, step_to=step_to, max_points=max_points
    )
    return MetricsOut.of(run_id, metric_names(session, run_id), series)


@router.get(
    "/runs/{run_id}/artifacts",
    response_model=ArtifactList,
    responses=NOT_FOUND,
    summary="A run's artifacts (results, weights, metrics table, figures)",
)
def run_artifacts_route(run_id: str, session: ReadSession, principal: CurrentPrincipal) -> ArtifactList:
    get_run(session, run_id)
    check_run_owner(session, run_id, principal)
    return ArtifactList(items=[ArtifactOut.of(a) for a in list_run_artifacts(session, run_id)])
