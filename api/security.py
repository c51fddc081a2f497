"""Who is calling: the Bearer API key of every ``/v1`` request, and its request rate.

With ``GNI_AUTH=disabled`` (the embedded mode on loopback) every request is the anonymous
principal, which sees everything; otherwise each key sees only the experiments it created.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.dependencies import Context, ReadSession
from gni_service.auth import ANONYMOUS, Principal, authenticate
from gni_service.limits import RateLimiter

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="APIKey",
    description="An API key from `gni keys create`: `Authorization: Bearer gni_<id>_<secret>`.",
)


def rate_limiter(request: Request) -> RateLimiter:
    """The app's limiter, made on first use from its settings."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        settings = request.app.state.context.settings
        limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        request.app.state.rate_limiter = limiter
    return limiter


async def get_principal(
    request: Request,
    context: Context,
    session: ReadSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if context.settings.auth == "disabled":
        principal = ANONYMOUS
        bucket = f"host:{request.client.host if request.client else '-'}"
    else:
        header = request.headers.get("authorization")
        principal = await run_in_threadpool(authenticate, session, header)
        bucket = f"key:{principal.owner}"
    rate_limiter(request).check(bucket)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
