"""/healthz (the process answers) and /readyz (its database, storage and executor can work)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.dependencies import Context
from api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is unavailable."}},
    summary="Database, artifact store and executor (its queue, when distributed) are reachable",
)
def readyz(context: Context) -> JSONResponse:
    results = context.readiness.probe()  # within its deadline, whatever a dependency does
    ready = all(result == "ok" for result in results.values())
    body = Readiness(status="ok" if ready else "unavailable", checks=results)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
