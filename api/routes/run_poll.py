"""``GET /v1/runs/{id}``: the route clients poll, served as cheaply as this stack allows.

Measured per request (docs/performance.md), FastAPI's dependency solving and route matching, the
ORM session and the hop to a worker thread were most of its cost, so this route does without them,
with the same outcome as any other ``/v1`` route:

- it identifies its caller with :func:`api.security.identify` (the function ``get_principal``
  uses: the same 401, rate budget and 429) and reads one Core row, run and owner together, through
  a connection outside any transaction (another owner's run is a 404, like a missing one);
- on SQLite the read runs on the event loop: a local primary-key lookup of some tens of
  microseconds that never waits for writers (WAL), cheaper than a thread hop and the GIL hand-offs
  that come with it. A networked database, or a rate limit kept in Redis, could stall the loop:
  one hop then;
- the row is serialised once, by :class:`~api.schemas.RunOut`;
- Starlette dispatches it (:class:`PolledRunRoute`, first in the app's routes); the FastAPI route
  of the same path documents it in the OpenAPI and answers the methods it does not take (405).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.routing import Match, Route
from starlette.types import Scope

from api.routes.runs import NOT_FOUND
from api.schemas import RunOut
from api.security import API_KEY_SECURITY, identify, rate_limiter
from gni_service.context import ServiceContext
from gni_service.limits import RequestRateLimiter
from gni_service.runs import read_run_for

PATH = "/runs/{run_id}"
router = APIRouter(tags=["runs"])


@router.get(
    PATH, response_model=RunOut, responses=NOT_FOUND, summary="One run", openapi_extra=API_KEY_SECURITY
)
async def get_run_route(run_id: str, request: Request) -> Response:
    context: ServiceContext = request.app.state.context
    limiter = rate_limiter(request)
    if context.database.dialect == "sqlite" and not limiter.blocking:
        body = _run_json(context, limiter, request, run_id)
    else:
        body = await run_in_threadpool(_run_json, context, limiter, request, run_id)
    return Response(body, media_type="application/json")


def _run_json(context: ServiceContext, limiter: RequestRateLimiter, request: Request, run_id: str) -> bytes:
    with context.database.single_reads() as connection:
        principal = identify(context.settings, limiter, connection, request)
        row = read_run_for(connection, run_id, principal)
    return RunOut.of(row).model_dump_json().encode()


class PolledRunRoute(Route):
    """``GET <prefix>/runs/{run_id}`` dispatched by Starlette to :func:`get_run_route`."""

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix + PATH, self.serve, methods=["GET"], include_in_schema=False)
        self.methods = {"GET"}  # not the HEAD Starlette adds: the documented route refuses it

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self  # the request metrics' label (FastAPI's router sets none)
        return match, child_scope

    @staticmethod
    async def serve(request: Request) -> Response:
        return await get_run_route(request.path_params["run_id"], request)
