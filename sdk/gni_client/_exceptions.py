"""Every error the client raises, in one tree.

.. code-block:: text

    GNIClientError                      anything this package raises on purpose
    ├── SpecValidationError             a spec failed the client-side check (no request was sent);
    │                                   ``.errors``: one ``{"loc", "msg"}`` per bad field, as the server
    ├── WaitTimeoutError                ``experiments.wait`` gave up (the experiment keeps running)
    └── APIError                        something went wrong talking to the service
        ├── APIConnectionError          no answer: refused, reset, DNS, TLS …  (retried)
        │   └── APITimeoutError         no answer in time                       (retried)
        ├── APIResponseValidationError  an answer that is not what the API documents
        ├── DownloadIntegrityError      a download's SHA-256 is not the recorded one (file not kept)
        └── APIStatusError              an answer with a 4xx/5xx status; ``.status_code``, ``.response``,
            │                           ``.type``, ``.message``, ``.details`` from the error body
            ├── BadRequestError             400
            ├── AuthenticationError         401
            ├── PermissionDeniedError       403
            ├── NotFoundError               404
            ├── ConflictError               409   (retried)
            ├── UnprocessableEntityError    422   ``.errors``: one ``{"loc", "msg"}`` per bad field
            ├── RateLimitError              429   (retried, honouring ``Retry-After``)
            └── InternalServerError         5xx   (retried)

The service answers every error with one body, ``{"error": {"type", "message", "details"}}``;
:class:`APIStatusError` exposes its three parts. Statuses marked *retried* (and 408) are retried
with jittered exponential backoff up to ``max_retries`` times before the error is raised.

>>> try:
...     raise NotFoundError("no experiment with id 'exp_x'", response=None, body=None, status_code=404)
... except APIStatusError as error:
...     (error.status_code, error.message)
(404, "no experiment with id 'exp_x'")
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "DownloadIntegrityError",
    "FieldError",
    "GNIClientError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "SpecValidationError",
    "UnprocessableEntityError",
    "WaitTimeoutError",
]

FieldError = dict[str, str]
"""One offending field: ``{"loc": "noise.sigma", "msg": "Input should be a valid number"}``."""


class GNIClientError(Exception):
    """Base of everything this package raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SpecValidationError(GNIClientError, ValueError):
    """A run or sweep spec failed the client-side check, with the server's field paths and messages."""

    def __init__(self, message: str, errors: list[FieldError]) -> None:
        super().__init__(message)
        self.errors = errors


class APIError(GNIClientError):
    """Something went wrong talking to the service; ``request`` is the request that failed."""

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.request = request


class APIConnectionError(APIError):
    """The service could not be reached or dropped the connection."""

    def __init__(
        self, message: str = "could not connect to the service", *, request: httpx.Request | None = None
    ):
        super().__init__(message, request=request)


class APITimeoutError(APIConnectionError):
    """The service did not answer within the timeout."""

    def __init__(
        self, message: str = "the request timed out", *, request: httpx.Request | None = None
    ) -> None:
        super().__init__(message, request=request)


class APIResponseValidationError(APIError):
    """The service answered with something that is not what its API documents."""

    def __init__(self, message: str, *, response: httpx.Response) -> None:
        super().__init__(message, request=response.request)
        self.response = response
        self.status_code = response.status_code


class DownloadIntegrityError(APIError):
    """A downloaded file's SHA-256 differs from the one the service recorded (the file is not kept)."""


class APIStatusError(APIError):
    """The service answered with an error status; ``type``, ``message`` and ``details`` come from its body."""

    status_code: int

    def __init__(
        self, message: str, *, response: httpx.Response | None, body: Any, status_code: int | None = None
    ):
        request = response.request if response is not None and _has_request(response) else None
        super().__init__(message, request=request)
        self.response = response
        self.body = body
        self.status_code = (
            status_code if status_code is not None else (response.status_code if response else 0)
        )
        info = body.get("error") if isinstance(body, dict) else None
        info = info if isinstance(info, dict) else {}
        self.type: str | None = info.get("type") if isinstance(info.get("type"), str) else None
        self.details: Any = info.get("details")

    def __str__(self) -> str:
        return f"{self.status_code} {self.message}"


class BadRequestError(APIStatusError):
    """400: the request is malformed."""


class AuthenticationError(APIStatusError):
    """401: no API key, or a wrong one (``GNI_API_KEY``)."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not do this."""


class NotFoundError(APIStatusError):
    """404: no such experiment, run or artifact."""


class ConflictError(APIStatusError):
    """409: the change conflicts with the object's state (e.g. cancelling a finished experiment)."""


class UnprocessableEntityError(APIStatusError):
    """422: the body or a parameter is invalid; ``errors`` lists each offending field."""

    @property
    def errors(self) -> list[FieldError]:
        details = self.details
        if not isinstance(details, list):
            return []
        return [
            {"loc": str(d.get("loc", "")), "msg": str(d.get("msg", ""))}
            for d in details
            if isinstance(d, dict)
        ]


class RateLimitError(APIStatusError):
    """429: too many requests; retried after ``Retry-After``."""


class InternalServerError(APIStatusError):
    """5xx: the service failed; retried."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def _has_request(response: httpx.Response) -> bool:
    try:
        response.request  # noqa: B018 - raises RuntimeError when the response was built by hand
    except RuntimeError:
        return False
    return True


def status_error_from(response: httpx.Response) -> APIStatusError:
    """The :class:`APIStatusError` subclass for ``response``, message taken from the error body."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text or None
    info = body.get("error") if isinstance(body, dict) else None
    if isinstance(info, dict) and isinstance(info.get("message"), str):
        message = info["message"]
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    else:
        message = f"the service answered {response.status_code} {response.reason_phrase}".strip()
    status = response.status_code
    cls = _BY_STATUS.get(status, InternalServerError if status >= 500 else APIStatusError)
    return cls(message, response=response, body=body)


class WaitTimeoutError(GNIClientError, TimeoutError):
    """``experiments.wait`` gave up before the experiment finished (the experiment keeps running)."""

    def __init__(self, experiment_id: str, timeout: float, status: str) -> None:
        super().__init__(f"experiment '{experiment_id}' is still {status} after {timeout:g} s")
        self.experiment_id = experiment_id
        self.status = status
