"""Every error answers with one JSON shape: ``{"error": {"type", "message", "details"}}``.

Domain errors map to statuses here (a spec error is 422, an unknown id 404, a conflicting change
409); request validation names each offending field; anything unexpected is logged with its
traceback and answered with a bare 500 that reveals nothing of the internals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DataError as DatabaseDataError
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gni_engine.errors import Conflict, DataError, GNIError, NotFound, SpecError
from gni_engine.spec import format_validation_error
from gni_service.auth import Unauthenticated
from gni_service.executor.inprocess import ExecutorNotRunning
from gni_service.limits import LimitExceeded, TooManyRequests
from gni_service.storage import StorageError

log = logging.getLogger("api.errors")
RETRY_AFTER_S = "5"

STATUS_BY_ERROR: tuple[tuple[type[GNIError], int], ...] = (
    (SpecError, 422),
    (DataError, 422),
    (NotFound, 404),
    (Conflict, 409),
    (StorageError, 503),
    (ExecutorNotRunning, 503),
    (Unauthenticated, 401),
    (LimitExceeded, 422),
    (TooManyRequests, 429),
)
# Every way the database can be unreachable: answered 503 with Retry-After, never 500.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeoutError,
)


def error_response(
    status: int, error_type: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"type": error_type, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(error: GNIError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return 400


async def _domain_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, GNIError)
    status = status_of(error)
    headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else None
    if isinstance(error, Unauthenticated):
        headers = {"WWW-Authenticate": 'Bearer realm="gni"'}
    elif isinstance(error, TooManyRequests):
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after_s)))}
    elif status == 409:
        # A finished experiment or a reused Idempotency-Key: asking again gives the same answer.
        headers = {"X-Should-Retry": "false"}
    return error_response(status, error.error_type, error.message, error.details, headers)


class _ErrorList:
    """Pydantic's error list behind the one method :func:`format_validation_error` reads."""

    def __init__(self, items: Sequence[dict[str, Any]]) -> None:
        self._items = list(items)

    def errors(self, include_url: bool = True) -> list[dict[str, Any]]:
        return self._items


def field_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """``[{"loc": "base.noise.sigma", "msg": …}]``: the engine's wording, request parts dropped."""
    items = []
    for item in errors:
        loc = tuple(item.get("loc", ()))
        if item.get("type") == "json_invalid":
            items.append({"loc": (), "msg": f"the body is not valid JSON: {item.get('msg')}"})
            continue
        # Drop "body"/"query"/"path": the rest names the field the way the client wrote it.
        items.append({**item, "loc": loc[1:] if loc[:1] == ("body",) else loc[1:] or loc})
    details = format_validation_error(cast(ValidationError, _ErrorList(items)))
    return [{**d, "loc": "body"} if d["loc"] == "(root)" else d for d in details]


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    details = field_errors(error.errors())
    message = "invalid request: " + "; ".join(f"{d['loc']}: {d['msg']}" for d in details)
    return error_response(422, SpecError.error_type, message, details)


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400:
        # FastAPI's answer to a body it cannot decode (not UTF-8): invalid input, like any other.
        message = f"the body cannot be read: {error.detail}"
        return error_response(422, SpecError.error_type, message, [{"loc": "body", "msg": message}])
    kinds = {
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        415: "unsupported_media_type",
    }
    return error_response(
        error.status_code,
        kinds.get(error.status_code, "http_error"),
        str(error.detail),
        headers=dict(error.headers) if error.headers else None,
    )


async def _database_unavailable(_: Request, error: Exception) -> JSONResponse:
    # The driver's own first line says why ("password authentication failed for user …", "database
    # … does not exist", "Connection refused"); never the statement or its parameters.
    cause = str(getattr(error, "orig", None) or "").strip().splitlines()
    log.error("database unavailable: %s%s", type(error).__name__, f": {cause[0][:300]}" if cause else "")
    return error_response(
        503,
        "unavailable",
        "the database is unavailable; retry shortly",
        headers={"Retry-After": RETRY_AFTER_S},
    )


async def _unstorable_value(_: Request, error: Exception) -> JSONResponse:
    # The database refused a value of the request (a NUL character in PostgreSQL text, a number out
    # of a column's range): the client's input, not a fault of the service.
    log.info("database refused a request value: %s", type(getattr(error, "orig", error)).__name__)
    message = (
        "a value of the request cannot be stored or compared (e.g. a NUL character or an out-of-range number)"
    )
    return error_response(422, SpecError.error_type, message, [{"loc": "request", "msg": message}])


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DatabaseDataError, _unstorable_value)
    app.add_exception_handler(GNIError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for kind in DATABASE_UNAVAILABLE:
        app.add_exception_handler(kind, _database_unavailable)


class CatchAllMiddleware:
    """The last line: an unexpected exception becomes a logged 500 with the JSON error shape.

    Starlette's own handler would re-raise after answering; this one answers and stops, so
    neither a client nor a test runner ever sees a traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            if isinstance(error, DATABASE_UNAVAILABLE) or (
                isinstance(error, DBAPIError) and error.connection_invalidated
            ):
                response = await _database_unavailable(Request(scope), error)
            else:
                log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
                response = error_response(500, "internal_error", "internal server error; it has been logged")
            if not started:
                await response(scope, receive, send)


class BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length or while they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                too_large = True
                raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # The app answers a body it could not read as some error; the client gets the 413 instead.
            if not too_large:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            pass
        if too_large:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than {self.max_bytes} bytes"
        response = error_response(413, "payload_too_large", message, {"max_bytes": self.max_bytes})
        await response(scope, receive, send)
