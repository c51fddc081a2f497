"""The ``Idempotency-Key`` header of every POST: replay the first answer, refuse another request.

The dependency answers a repeated request before its route runs (by raising :class:`Replay`,
which the app turns into the stored response); a route that changes something calls
:meth:`Idempotency.commit` with its answer, which stores that answer in the same transaction.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.dependencies import WriteSession
from api.security import CurrentPrincipal
from gni_service.auth import Principal
from gni_service.idempotency import (
    MAX_KEY_LENGTH,
    StoredResponse,
    find_response,
    record_response,
    request_hash,
)


class Replay(Exception):
    """Raised to answer with the stored response of an earlier identical request."""

    def __init__(self, stored: StoredResponse) -> None:
        super().__init__("idempotent replay")
        self.stored = stored


def replay_response(stored: StoredResponse) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"}
    links = stored.body.get("links")
    if stored.status_code == 202 and isinstance(links, dict) and isinstance(links.get("self"), str):
        headers["Location"] = links["self"]
    return JSONResponse(stored.body, status_code=stored.status_code, headers=headers)


async def _replay_handler(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, Replay)
    return replay_response(error.stored)


def install_replay_handler(app: FastAPI) -> None:
    app.add_exception_handler(Replay, _replay_handler)


class Idempotency:
    """One request's key (None when the client sent none) and what to store under it."""

    def __init__(self, session: Session, principal: Principal, key: str | None, hash_: str) -> None:
        self.session = session
        self.owner = principal.owner or ""
        self.key = key
        self.hash = hash_

    def find(self) -> StoredResponse | None:
        if self.key is None:
            return None
        return find_response(self.session, self.owner, self.key, self.hash)

    def commit(self, status_code: int, body: BaseModel) -> JSONResponse | None:
        """Store the answer with the route's changes and commit them together.

        Returns the first answer instead when a concurrent request with the same key won the race
        (its insert made ours conflict, and our changes were rolled back).
        """
        if self.key is not None:
            payload: dict[str, Any] = body.model_dump(mode="json")
            record_response(self.session, self.owner, self.key, self.hash, status_code, payload)
        try:
            self.session.commit()
        except IntegrityError:
            self.session.rollback()
            stored = self.find()
            if stored is None:
                raise
            return replay_response(stored)
        return None


async def idempotency(
    request: Request,
    session: WriteSession,
    principal: CurrentPrincipal,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=MAX_KEY_LENGTH,
            pattern=r"^[\x21-\x7e]+$",
            description="Makes the POST safe to retry: the same key and request get the first answer "
            "again; the same key with a different request is a 409.",
        ),
    ] = None,
) -> Idempotency:
    body = await request.body()
    hash_ = request_hash(request.method, request.url.path, request.url.query, body)
    handle = Idempotency(session, principal, idempotency_key, hash_)
    if idempotency_key is not None:
        stored = await run_in_threadpool(handle.find)
        if stored is not None:
            raise Replay(stored)
    return handle


IdempotentRequest = Annotated[Idempotency, Depends(idempotency)]
