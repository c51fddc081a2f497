"""The FastAPI application: ``create_app()`` wires settings, database, storage and executor.

Nothing is read at import time: ``uvicorn --factory api.app:create_app`` (or ``gni serve``) calls
:func:`create_app`, which reads the settings then; the lifespan opens the database and starts the
executor, and stops both on shutdown.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import gni_engine
from api.errors import BodySizeLimitMiddleware, CatchAllMiddleware, install_error_handlers
from api.idempotency import install_replay_handler
from api.monitoring import RequestContextMiddleware, build_registry
from api.routes import artifacts, experiments, health, run_poll, runs
from api.schemas import ErrorBody
from api.security import get_principal
from gni_service.context import ServiceContext, build_context
from gni_service.executor.base import Executor
from gni_service.limits import build_rate_limiter
from gni_service.settings import ServiceSettings, get_settings
from gni_service.structured_logging import configure_logging

log = logging.getLogger("api")

DESCRIPTION = """\
Batch experiments on Gaussian noise injections (GNIs), as a service.

Submit a sweep (a run spec and grid axes over its fields) or a preset; the service expands it into
runs, trains them in stacked batches, and keeps their results, metric series and artifacts
(figures, weights) queryable. Every error answers `{"error": {"type", "message", "details"}}`.
"""

COMMON_ERRORS: dict[int | str, dict[str, object]] = {
    401: {
        "model": ErrorBody,
        "description": "No API key, or a bad or revoked one (when authentication is on).",
        "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    },
    413: {"model": ErrorBody, "description": "The request body is too large."},
    422: {"model": ErrorBody, "description": "Invalid input; `details` names each offending field."},
    500: {"model": ErrorBody, "description": "Unexpected failure (logged; no internals in the body)."},
    429: {
        "model": ErrorBody,
        "description": "Too many requests, or too many active runs, for this key; retry after Retry-After.",
        "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    },
    503: {"model": ErrorBody, "description": "The database or the artifact store is unavailable; retry."},
}
# How to run the app under uvicorn (``gni serve``, the image, the benchmark). The asyncio event
# loop: under 50 clients of the polled GET its p99 was shorter than uvloop's at the same throughput
# (docs/performance.md). No uvicorn access log: the request middleware writes one line per request
# (the route template, never the query string) under its request id; uvicorn's would double it.
UVICORN_OPTIONS: dict[str, Any] = {"loop": "asyncio", "access_log": False}
AUTH_DISABLED_WARNING = (
    "authentication is DISABLED (GNI_AUTH=disabled): anyone who can reach this server can submit, "
    "read and cancel every experiment; serve on loopback only, or set GNI_AUTH=required"
)


def create_app(
    settings: ServiceSettings | None = None,
    *,
    context: ServiceContext | None = None,
    executor: Executor | None = None,
    start_executor: bool = True,
) -> FastAPI:
    """The application. ``context`` (tests) replaces the one built from ``settings``."""
    settings = context.settings if context is not None else settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_format, settings.log_level)
        # The request middleware writes the access log (route template, request id); uvicorn's own
        # (raw path and query string) would double every line: it logs when its logger has a handler.
        logging.getLogger("uvicorn.access").propagate = False
        if settings.auth == "disabled":
            log.warning(AUTH_DISABLED_WARNING)
        service = context or build_context(settings, executor=executor)
        app.state.context = service
        limiter = app.state.rate_limiter = build_rate_limiter(service.settings)  # connects on first use
        # Few request threads, queued in order: many threads contending for the GIL make a long tail.
        to_thread.current_default_thread_limiter().total_tokens = service.settings.api_threads
        if start_executor:
            service.executor.start()
        # Everything built so far lives as long as the process: move it out of the collector's reach,
        # so full collections stay short and do not stall requests (a long p99 tail otherwise).
        gc.collect()
        gc.freeze()
        log.info(
            "gni service ready: database %s, executor %s", service.database.engine.url, service.executor.name
        )
        try:
            yield
        finally:
            limiter.close()  # its connections; it would open new ones if still asked
            if context is None:
                service.close()
            elif start_executor:
                service.executor.stop(30.0)

    app = FastAPI(
        title="gni",
        version=gni_engine.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        responses=COMMON_ERRORS,
    )
    if context is not None:
        app.state.context = context
    install_error_handlers(app)
    install_replay_handler(app)
    app.include_router(health.router)
    guarded = [Depends(get_principal)]
    app.include_router(experiments.router, prefix="/v1", dependencies=guarded)
    app.include_router(run_poll.router, prefix="/v1")  # identifies its caller itself
    app.include_router(runs.router, prefix="/v1", dependencies=guarded)
    app.include_router(artifacts.router, prefix="/v1", dependencies=guarded)
    app.router.routes.insert(0, run_poll.PolledRunRoute("/v1"))  # serves what run_poll.router documents
    registry, request_durations = build_registry(lambda: app.state.context.database)
    app.state.metrics_registry = registry

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(RequestContextMiddleware, requests=request_durations)
    return app
