"""FastAPI dependencies: the process's service context and database sessions, injected per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from gni_service.context import ServiceContext
from gni_service.settings import ServiceSettings


async def get_context(request: Request) -> ServiceContext:
    context: ServiceContext = request.app.state.context
    return context


async def get_service_settings(context: Annotated[ServiceContext, Depends(get_context)]) -> ServiceSettings:
    return context.settings


async def reading_session(context: Annotated[ServiceContext, Depends(get_context)]) -> AsyncIterator[Session]:
    """A session for a route that only reads.

    Making one does no I/O, so it happens on the event loop; so does closing it when the route
    already ended its transaction (see :func:`end_read`). The fewer thread hops a request makes,
    the shorter its tail latency under load.
    """
    session = context.database.reading()
    try:
        yield session
    finally:
        await close_session(session)


async def writing_session(context: Annotated[ServiceContext, Depends(get_context)]) -> AsyncIterator[Session]:
    """A session whose transaction takes the write lock up front on SQLite; the route commits."""
    session = context.database.writing()
    try:
        yield session
    finally:
        await close_session(session)


async def close_session(session: Session) -> None:
    if session.in_transaction():
        await run_in_threadpool(session.close)  # rolls back: database I/O, off the event loop
    else:
        session.close()


def end_read(session: Session) -> None:
    """End a read-only transaction from the route's own thread (there is nothing to write).

    ``commit`` rather than ``rollback``: when a test joins the session to its own outer transaction,
    a rollback would discard the test's data, a commit only releases a savepoint.
    """
    session.commit()


Context = Annotated[ServiceContext, Depends(get_context)]
Settings = Annotated[ServiceSettings, Depends(get_service_settings)]
ReadSession = Annotated[Session, Depends(reading_session)]
WriteSession = Annotated[Session, Depends(writing_session)]
