"""``Client`` and ``AsyncClient``: the service's resources over one shared base.

>>> client = Client(base_url="http://127.0.0.1:8000", max_retries=0)
>>> str(client.base_url), client.max_retries
('http://127.0.0.1:8000/', 0)
>>> client.with_options(timeout=5.0).timeout
5.0
>>> client.close()
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from gni_client._base_client import (
    DEFAULT_MAX_RETRIES,
    NOT_GIVEN,
    AsyncAPIClient,
    RequestOptions,
    SyncAPIClient,
    Timeout,
    _NotGiven,
)
from gni_client.resources import Artifacts, AsyncArtifacts, AsyncExperiments, AsyncRuns, Experiments, Runs

__all__ = ["AsyncClient", "Client"]


class Client(SyncAPIClient):
    """A blocking client of the gni service.

    Configured from its arguments or, where they are not given, from ``GNI_BASE_URL`` (default
    ``http://127.0.0.1:8000``) and ``GNI_API_KEY`` (sent as a bearer token). ``timeout`` is seconds
    or an :class:`httpx.Timeout`; ``max_retries`` bounds retries of failed requests (see
    :mod:`gni_client._base_client`); ``transport`` replaces the network (``httpx.ASGITransport(app)``
    runs against an app in-process, ``httpx.MockTransport`` in tests).
    """

    experiments: Experiments
    runs: Runs
    artifacts: Artifacts

    def __init__(
        self,
        *,
        base_url: str | httpx.URL | None = None,
        api_key: str | None = None,
        timeout: Timeout | _NotGiven = NOT_GIVEN,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            transport=transport,
            http_client=http_client,
        )
        self.experiments = Experiments(self)
        self.runs = Runs(self)
        self.artifacts = Artifacts(self)

    def with_options(
        self, *, timeout: Timeout | _NotGiven = NOT_GIVEN, max_retries: int | None = None
    ) -> Client:
        """A client sharing this one's connections with another timeout or retry budget."""
        return Client(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=self.timeout if isinstance(timeout, _NotGiven) else timeout,
            max_retries=self.max_retries if max_retries is None else max_retries,
            default_headers=self._custom_headers,
            http_client=self._client,
        )

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: the service process is up."""
        data: dict[str, Any] = self.request(RequestOptions("GET", "/healthz"))
        return data

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient(AsyncAPIClient):
    """The non-blocking twin of :class:`Client` (same arguments, awaitable methods)."""

    experiments: AsyncExperiments
    runs: AsyncRuns
    artifacts: AsyncArtifacts

    def __init__(
        self,
        *,
        base_url: str | httpx.URL | None = None,
        api_key: str | None = None,
        timeout: Timeout | _NotGiven = NOT_GIVEN,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            transport=transport,
            http_client=http_client,
        )
        self.experiments = AsyncExperiments(self)
        self.runs = AsyncRuns(self)
        self.artifacts = AsyncArtifacts(self)

    def with_options(
        self, *, timeout: Timeout | _NotGiven = NOT_GIVEN, max_retries: int | None = None
    ) -> AsyncClient:
        return AsyncClient(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=self.timeout if isinstance(timeout, _NotGiven) else timeout,
            max_retries=self.max_retries if max_retries is None else max_retries,
            default_headers=self._custom_headers,
            http_client=self._client,
        )

    async def health(self) -> dict[str, Any]:
        data: dict[str, Any] = await self.request(RequestOptions("GET", "/healthz"))
        return data

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()
