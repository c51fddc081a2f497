"""/healthz (the process answers) and /readyz (its database, storage and executor can work)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.dependencies import Context
from api.schemas import Health, Readiness
from gni_engine.errors import GNIError
from gni_service.migrate import check_schema

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
    checks: dict[str, Callable[[], None]] = {
        "database": lambda: check_schema(context.database.engine),
        "storage": context.store.check,
        "executor": context.executor.check,
    }
    results = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except GNIError as error:
            results[name] = f"unavailable: {error.message}"
        except Exception as error:  # any failure means "not ready"; say which, without internals
            results[name] = f"unavailable: {type(error).__name__}"
    ready = all(result == "ok" for result in results.values())
    body = Readiness(status="ok" if ready else "unavailable", checks=results)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
