"""What the sync and the async client share: configuration, request building, retries, error mapping.

A request is retried when no answer came (connection errors, timeouts) or the answer is 408, 409, 429
or 5xx, up to ``max_retries`` times. The wait before retry ``k`` (0-based) is the server's
``Retry-After`` (or ``Retry-After-Ms``) when it gives one of at most a minute, otherwise

.. math::

    t_k = \\min(0.5 \\cdot 2^k,\\ 8)\\ \\mathrm{s} \\times (1 - u/4), \\qquad u \\sim U[0, 1),

jittered so that many clients do not retry in step. A request that carries an ``Idempotency-Key``
keeps the same key on every retry, so the service creates the experiment once.
"""

from __future__ import annotations

import datetime
import email.utils
import os
import platform
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio
import httpx

from gni_client._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    status_error_from,
)
from gni_client._version import __version__

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
RETRY_STATUSES = frozenset({408, 409, 429})

Timeout = float | httpx.Timeout | None
HttpxClientT = TypeVar("HttpxClientT", httpx.Client, httpx.AsyncClient)
Params = Mapping[str, Any]


class _NotGiven:
    """Marks an argument that was not passed (``None`` can be a meaningful value, e.g. no timeout)."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Any = _NotGiven()


@dataclass(frozen=True)
class RequestOptions:
    method: str
    path: str
    params: Params | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    timeout: Timeout | _NotGiven = NOT_GIVEN
    max_retries: int | None = None


def new_idempotency_key() -> str:
    """A fresh ``Idempotency-Key``: sent with every retry of one POST, so the service applies it once."""
    return f"gni-{uuid.uuid4()}"


def _clean_params(params: Params | None) -> dict[str, Any]:
    """Drop ``None`` values; lists become repeated parameters (``?filter=a&filter=b``)."""
    if not params:
        return {}
    return {key: value for key, value in params.items() if value is not None}


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """The wait the server asks for, from ``Retry-After-Ms`` or ``Retry-After`` (seconds or a date).

    >>> retry_after_seconds(httpx.Headers({"retry-after": "3"}))
    3.0
    >>> retry_after_seconds(httpx.Headers({"retry-after-ms": "250"}))
    0.25
    >>> retry_after_seconds(httpx.Headers({})) is None
    True
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return float(raw_ms) / 1000.0
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):  # neither seconds nor an HTTP date: ignore it
        return None
    if parsed.tzinfo is None:  # "-0000" means UTC, not the local time zone
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp() - time.time()


def backoff_delay(retries_taken: int, response: httpx.Response | None) -> float:
    """Seconds to wait before the next try (see the module docstring)."""
    if response is not None:
        asked = retry_after_seconds(response.headers)
        if asked is not None and 0 <= asked <= MAX_RETRY_AFTER:
            return asked
    delay = min(INITIAL_RETRY_DELAY * 2.0**retries_taken, MAX_RETRY_DELAY)
    return delay * (1.0 - 0.25 * random.random())


def should_retry(response: httpx.Response) -> bool:
    """408, 409, 429 and 5xx are retried, unless the server says otherwise with ``X-Should-Retry``."""
    explicit = response.headers.get("x-should-retry")
    if explicit == "true":
        return True
    if explicit == "false":
        return False
    return response.status_code in RETRY_STATUSES or response.status_code >= 500


class BaseClient(Generic[HttpxClientT]):
    """Configuration and the request/response logic that does not depend on sync or async I/O."""

    _client: HttpxClientT

    def __init__(
        self,
        *,
        base_url: str | httpx.URL | None,
        api_key: str | None,
        timeout: Timeout | _NotGiven,
        max_retries: int,
        default_headers: Mapping[str, str] | None,
    ) -> None:
        if base_url is None:
            base_url = os.environ.get("GNI_BASE_URL") or DEFAULT_BASE_URL
        if api_key is None:
            api_key = os.environ.get("GNI_API_KEY") or None
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = httpx.URL(str(base_url).rstrip("/") + "/")
        if self.base_url.scheme not in ("http", "https") or not self.base_url.host:
            raise ValueError(
                f"base URL {str(base_url)!r} (base_url=, --base-url or $GNI_BASE_URL): "
                "expected http://HOST:PORT or https://HOST"
            )
        self.api_key = api_key
        self.timeout: Timeout = DEFAULT_TIMEOUT if isinstance(timeout, _NotGiven) else timeout
        self.max_retries = max_retries
        self._custom_headers = dict(default_headers or {})

    @property
    def default_headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "User-Agent": f"gni-client/{__version__} python/{platform.python_version()}",
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(self._custom_headers)
        return headers

    def _build_request(self, options: RequestOptions) -> httpx.Request:
        headers = {**self.default_headers, **options.headers}
        if options.idempotency_key is not None:
            headers["Idempotency-Key"] = options.idempotency_key
        timeout = self.timeout if isinstance(options.timeout, _NotGiven) else options.timeout
        url = self.base_url.join(options.path.lstrip("/"))
        return self._client.build_request(
            options.method,
            url,
            params=_clean_params(options.params),
            json=options.json,
            headers=headers,
            timeout=timeout,
        )

    def _retries_for(self, options: RequestOptions) -> int:
        return self.max_retries if options.max_retries is None else options.max_retries

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise APIResponseValidationError(
                f"expected JSON from {response.request.method} {response.request.url.path}, "
                f"got {response.headers.get('content-type', 'no content type')}",
                response=response,
            ) from None


def _connection_error(error: httpx.TransportError, request: httpx.Request) -> APIConnectionError:
    if isinstance(error, httpx.TimeoutException):
        return APITimeoutError(
            f"no answer from {request.url.host} in time ({type(error).__name__})", request=request
        )
    return APIConnectionError(
        f"could not reach {request.url.copy_with(query=None)}: {error}", request=request
    )


class SyncAPIClient(BaseClient[httpx.Client]):
    """Blocking I/O over an :class:`httpx.Client`."""

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
        )
        self._owns_client = http_client is None
        self._client = http_client or httpx.Client(transport=transport, follow_redirects=True)

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def _send(self, options: RequestOptions, *, stream: bool) -> httpx.Response:
        """Send with retries; the response is an error-free one (2xx/3xx) or an exception is raised."""
        retries = self._retries_for(options)
        retries_taken = 0
        while True:
            request = self._build_request(options)
            try:
                response = self._receive(request, stream=stream)
            except httpx.TransportError as error:
                if retries_taken >= retries:
                    raise _connection_error(error, request) from error
                self._sleep(backoff_delay(retries_taken, None))
                retries_taken += 1
                continue
            if response.is_success:
                return response
            if retries_taken < retries and should_retry(response):
                self._sleep(backoff_delay(retries_taken, response))
                retries_taken += 1
                continue
            raise status_error_from(response)

    def _receive(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        """One try's answer; an error answer's streamed body is read here (a transport error while
        reading it is retried like one before the headers) and its stream closed."""
        response = self._client.send(request, stream=stream, follow_redirects=True)
        if stream and not response.is_success:
            try:
                response.read()
            finally:
                response.close()
        return response

    def request(self, options: RequestOptions) -> Any:
        """The decoded JSON body of a successful answer."""
        return self._decode(self._send(options, stream=False))

    @contextmanager
    def stream(self, options: RequestOptions) -> Iterator[httpx.Response]:
        """A successful streamed answer (retried until its headers arrive), closed on exit."""
        response = self._send(options, stream=True)
        try:
            yield response
        finally:
            response.close()

    def close(self) -> None:
        """Close the connection pool (unless an ``http_client`` was passed in)."""
        if self._owns_client:
            self._client.close()


class AsyncAPIClient(BaseClient[httpx.AsyncClient]):
    """Non-blocking I/O over an :class:`httpx.AsyncClient`."""

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
        )
        self._owns_client = http_client is None
        self._client = http_client or httpx.AsyncClient(transport=transport, follow_redirects=True)

    async def _sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    async def _send(self, options: RequestOptions, *, stream: bool) -> httpx.Response:
        retries = self._retries_for(options)
        retries_taken = 0
        while True:
            request = self._build_request(options)
            try:
                response = await self._receive(request, stream=stream)
            except httpx.TransportError as error:
                if retries_taken >= retries:
                    raise _connection_error(error, request) from error
                await self._sleep(backoff_delay(retries_taken, None))
                retries_taken += 1
                continue
            if response.is_success:
                return response
            if retries_taken < retries and should_retry(response):
                await self._sleep(backoff_delay(retries_taken, response))
                retries_taken += 1
                continue
            raise status_error_from(response)

    async def _receive(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        """As :meth:`SyncAPIClient._receive`."""
        response = await self._client.send(request, stream=stream, follow_redirects=True)
        if stream and not response.is_success:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response

    async def request(self, options: RequestOptions) -> Any:
        return self._decode(await self._send(options, stream=False))

    @asynccontextmanager
    async def stream(self, options: RequestOptions) -> AsyncIterator[httpx.Response]:
        response = await self._send(options, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()
