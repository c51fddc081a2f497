"""Who is calling: the Bearer API key of every ``/v1`` request, and its request rate.

With ``GNI_AUTH=disabled`` (the embedded mode on loopback) every request is the anonymous
principal, which sees everything; otherwise each key sees only the experiments it created.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from api.dependencies import Context, ReadSession
from gni_service.auth import ANONYMOUS, Principal, authenticate
from gni_service.limits import RequestRateLimiter, build_rate_limiter
from gni_service.settings import ServiceSettings

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="APIKey",
    description="An API key from `gni keys create`: `Authorization: Bearer gni_<id>_<secret>`.",
)
# For a route that identifies its caller itself (see ``api.routes.runs``): the same OpenAPI entry.
API_KEY_SECURITY: dict[str, object] = {"security": [{bearer.scheme_name: []}]}


def rate_limiter(request: Request) -> RequestRateLimiter:
    """The app's limiter: made and closed by its lifespan, or made here when that did not run."""
    limiter: RequestRateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        limiter = build_rate_limiter(request.app.state.context.settings)
        request.app.state.rate_limiter = limiter
    return limiter


def identify(
    settings: ServiceSettings, limiter: RequestRateLimiter, session: Session | Connection, request: Request
) -> Principal:
    """The request's principal, once it has taken one request from its rate budget.

    Blocking when authentication is on (a database read) or the limiter is remote: see
    :func:`identify_blocks`.
    """
    if settings.auth == "disabled":
        principal = ANONYMOUS
        bucket = f"host:{request.client.host if request.client else '-'}"
    else:
        principal = authenticate(session, request.headers.get("authorization"))
        bucket = f"key:{principal.owner}"
    limiter.check(bucket)
    return principal


def identify_blocks(settings: ServiceSettings, limiter: RequestRateLimiter) -> bool:
    """Whether :func:`identify` waits on I/O (call it from a worker thread then)."""
    return settings.auth != "disabled" or limiter.blocking


async def get_principal(
    request: Request,
    context: Context,
    session: ReadSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    limiter = rate_limiter(request)
    if identify_blocks(context.settings, limiter):
        principal = await run_in_threadpool(identify, context.settings, limiter, session, request)
    else:
        principal = identify(context.settings, limiter, session, request)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
