"""Fixtures of the SDK tests: the real app in-process (sync and async transports) on a temp SQLite
data folder with the in-process executor training for real, and a tiny spec that trains in well
under a second."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
from fastapi import FastAPI
from gni_client import AsyncClient, Client

from api.app import create_app
from gni_service.context import ServiceContext, build_context
from gni_service.settings import ServiceSettings

BASE_URL = "http://gni.test"


class SyncASGITransport(httpx.BaseTransport):
    """httpx's ASGITransport for a blocking client: each request runs on an event loop in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self._transport = httpx.ASGITransport(app=app)
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def call() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            response = await self._transport.handle_async_request(request)
            body = b"".join([chunk async for chunk in response.aiter_raw()])
            return response.status_code, response.headers.raw, body

        status, headers, body = self._portal.call(call)
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))

    def close(self) -> None:
        self._portal_cm.__exit__(None, None, None)


@pytest.fixture
def tiny_spec() -> dict[str, Any]:
    return {
        "task": "regression",
        "data": {"name": "sinusoids", "n_points": 64, "frequencies": [1.0, 3.0, 5.0]},
        "model": {"hidden": [16, 16]},
        "noise": {"sigma": 0.1},
        "training": {"steps": 30, "lr": 0.01},
        "analyses": {"record_every": 10, "noise_gap_samples": 8},
    }


def service_settings(folder: Path) -> ServiceSettings:
    return ServiceSettings(
        data_folder=folder,
        migrate_on_start=True,
        idle_poll_interval_s=0.2,
        progress_interval_s=0.1,
        cancel_poll_interval_s=0.1,
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceContext]:
    """The service's context with its executor training in background threads."""
    context = build_context(service_settings(tmp_path / "data"))
    context.executor.start()
    yield context
    context.close(timeout=30)


@pytest.fixture
def app(service: ServiceContext) -> FastAPI:
    return create_app(context=service, start_executor=False)


@pytest.fixture
def client(app: FastAPI) -> Iterator[Client]:
    transport = SyncASGITransport(app)
    with Client(base_url=BASE_URL, transport=transport, max_retries=0) as sdk:
        yield sdk
    transport.close()


@pytest.fixture
def async_client(app: FastAPI) -> AsyncClient:
    return AsyncClient(base_url=BASE_URL, transport=httpx.ASGITransport(app=app), max_retries=0)
