"""Retries, backoff, Retry-After, idempotency keys and error mapping, against httpx.MockTransport."""

from __future__ import annotations

import json

import gni_client
import httpx
import pytest
from gni_client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    Client,
    ConflictError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    UnprocessableEntityError,
)
from gni_client._exceptions import __doc__ as EXCEPTIONS_DOC

SPEC = {"data": {"n_points": 64, "frequencies": [1.0]}, "model": {"hidden": [4]}, "training": {"steps": 5}}
EXPERIMENT = {"id": "exp_1", "name": "x", "status": "queued", "run_count": 1, "counts": {"queued": 1}}


def error(status: int, kind: str, message: str, details=None, headers=None) -> httpx.Response:
    body = {"error": {"type": kind, "message": message, "details": details}}
    return httpx.Response(status, json=body, headers=headers)


class Script:
    """Answers requests in order from a list (a response, or an exception to raise)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_client(script, sleeps, **kwargs) -> Client:
    client = Client(base_url="http://gni.test", transport=httpx.MockTransport(script), **kwargs)
    client._sleep = sleeps.append  # type: ignore[method-assign]
    return client


def test_create_reuses_one_idempotency_key_and_honours_retry_after():
    script = Script(
        error(503, "unavailable", "busy", headers={"Retry-After": "2"}),
        httpx.ConnectError("refused"),
        error(429, "rate_limited", "slow down", headers={"retry-after-ms": "250"}),
        httpx.Response(202, json=EXPERIMENT),
    )
    sleeps: list[float] = []
    client = make_client(script, sleeps, max_retries=3)
    experiment = client.experiments.create(spec=SPEC)
    assert experiment.id == "exp_1"
    keys = {r.headers["Idempotency-Key"] for r in script.requests}
    assert len(script.requests) == 4 and len(keys) == 1
    assert [json.loads(r.content) for r in script.requests][0]["base"] == SPEC
    assert sleeps[0] == 2.0 and sleeps[2] == 0.25
    assert 0.75 <= sleeps[1] <= 1.0  # no Retry-After on a connection error: backoff 0.5·2¹, jittered


def test_each_create_gets_its_own_key_and_a_given_key_is_sent():
    script = Script(*(httpx.Response(202, json=EXPERIMENT) for _ in range(3)))
    client = make_client(script, [])
    client.experiments.create(spec=SPEC)
    client.experiments.create(spec=SPEC)
    client.experiments.create(spec=SPEC, idempotency_key="mine")
    keys = [r.headers["Idempotency-Key"] for r in script.requests]
    assert keys[0] != keys[1] and keys[2] == "mine"


def test_backoff_grows_and_gives_up_with_the_last_error():
    script = Script(*(error(500, "internal_error", "boom") for _ in range(4)))
    sleeps: list[float] = []
    client = make_client(script, sleeps, max_retries=3)
    with pytest.raises(InternalServerError) as caught:
        client.experiments.get("exp_1")
    assert caught.value.status_code == 500 and caught.value.message == "boom"
    assert len(script.requests) == 4
    for k, delay in enumerate(sleeps):
        assert 0.75 * 0.5 * 2**k <= delay <= 0.5 * 2**k


@pytest.mark.parametrize("status", [408, 409, 429, 502])
def test_retryable_statuses(status):
    script = Script(error(status, "x", "again"), httpx.Response(200, json=EXPERIMENT))
    client = make_client(script, [])
    assert client.experiments.get("exp_1").id == "exp_1"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, gni_client.BadRequestError),
        (401, gni_client.AuthenticationError),
        (403, gni_client.PermissionDeniedError),
        (404, NotFoundError),
    ],
)
def test_client_errors_are_not_retried(status, cls):
    script = Script(error(status, "x", "no"))
    client = make_client(script, [])
    with pytest.raises(cls):
        client.runs.get("run_1")
    assert len(script.requests) == 1


def test_unprocessable_exposes_field_errors_and_server_can_veto_retries():
    details = [{"loc": "base.noise.sigma", "msg": "sigma must be finite and >= 0, got -1.0"}]
    script = Script(
        error(422, "spec_error", "invalid", details),
        error(409, "conflict", "done", headers={"x-should-retry": "false"}),
    )
    client = make_client(script, [])
    with pytest.raises(UnprocessableEntityError) as caught:
        client.experiments.create(spec=SPEC, validate=False)
    assert caught.value.errors == details and caught.value.type == "spec_error"
    with pytest.raises(ConflictError):
        client.experiments.cancel("exp_1")
    assert len(script.requests) == 2


def test_connection_errors_and_timeouts():
    script = Script(*(httpx.ConnectError("refused") for _ in range(3)))
    sleeps: list[float] = []
    with pytest.raises(APIConnectionError):
        make_client(script, sleeps).experiments.get("exp_1")
    assert len(sleeps) == 2
    script = Script(httpx.ReadTimeout("slow"))
    with pytest.raises(APITimeoutError):
        make_client(script, [], max_retries=0).experiments.get("exp_1")


def test_non_json_error_body_still_maps():
    script = Script(httpx.Response(404, text="plain text"), httpx.Response(418))
    client = make_client(script, [], max_retries=0)
    with pytest.raises(NotFoundError, match="plain text"):
        client.runs.get("run_1")
    with pytest.raises(APIStatusError) as caught:
        client.runs.get("run_1")
    assert type(caught.value) is APIStatusError and caught.value.status_code == 418


def test_configuration_from_the_environment(monkeypatch):
    monkeypatch.setenv("GNI_BASE_URL", "http://from-env:9000/")
    monkeypatch.setenv("GNI_API_KEY", "secret")
    script = Script(httpx.Response(200, json=EXPERIMENT))
    client = Client(transport=httpx.MockTransport(script))
    client.experiments.get("exp/../x")
    request = script.requests[0]
    assert str(request.url) == "http://from-env:9000/v1/experiments/exp%2F..%2Fx"
    assert request.headers["Authorization"] == "Bearer secret"
    assert Client(base_url="http://arg", api_key="k").api_key == "k"


def test_timeouts_are_configurable():
    script = Script(httpx.Response(200, json=EXPERIMENT), httpx.Response(200, json=EXPERIMENT))
    client = Client(base_url="http://gni.test", transport=httpx.MockTransport(script), timeout=3.0)
    client.experiments.get("exp_1")
    client.with_options(timeout=httpx.Timeout(7.0)).experiments.get("exp_1")
    assert [r.extensions["timeout"]["read"] for r in script.requests] == [3.0, 7.0]


@pytest.mark.anyio
async def test_async_create_reuses_its_key_across_retries():
    script = Script(
        error(503, "unavailable", "busy", headers={"Retry-After": "1"}), httpx.Response(202, json=EXPERIMENT)
    )
    sleeps: list[float] = []
    client = AsyncClient(base_url="http://gni.test", transport=httpx.MockTransport(script))

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    client._sleep = fake_sleep  # type: ignore[method-assign]
    async with client:
        experiment = await client.experiments.create(spec=SPEC)
    assert experiment.id == "exp_1" and sleeps == [1.0]
    assert len({r.headers["Idempotency-Key"] for r in script.requests}) == 1


def test_the_exception_tree_is_documented_in_one_place():
    tree = {name: getattr(gni_client, name) for name in gni_client.__all__ if name.endswith("Error")}
    for name, cls in tree.items():
        assert name in EXCEPTIONS_DOC, f"{name} is missing from the exception docstring"
        assert issubclass(cls, gni_client.GNIClientError)
    assert issubclass(RateLimitError, APIStatusError) and issubclass(APITimeoutError, APIConnectionError)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("run_id", "name", "artifact_id"),
    [
        ("../..", "escape.txt", "art_1"),  # a run id that climbs out of runs/
        ("/tmp/elsewhere", "escape.txt", "art_1"),  # an absolute run id
        (None, "..", "../escape_id.txt"),  # no usable name: the id stands in, and must be one segment
    ],
)
def test_downloads_never_leave_their_folder_whatever_the_service_sends(tmp_path, run_id, name, artifact_id):
    # A compromised service (or anyone in the middle of plain http) chooses these fields.
    record = {"id": artifact_id, "experiment_id": "exp_1", "run_id": run_id, "kind": "results", "name": name}

    def script(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/content"):
            return httpx.Response(200, content=b"x")
        return httpx.Response(200, json={"items": [record], "next_cursor": None})

    target = tmp_path / "target"
    with Client(base_url="http://gni.test", transport=httpx.MockTransport(script), max_retries=0) as client:
        with pytest.raises(ValueError, match="the service sent an unusable"):
            client.artifacts.download_all("exp_1", to=target)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("header", ["soon", "Wed, 99 Foo 2015 07:28:00 GMT", ""])
def test_a_retry_after_that_is_neither_seconds_nor_a_date_is_ignored(header):
    script = Script(
        error(503, "unavailable", "busy", headers={"Retry-After": header}),
        httpx.Response(200, json=EXPERIMENT),
    )
    sleeps: list[float] = []
    assert make_client(script, sleeps, max_retries=2).experiments.get("exp_1").id == "exp_1"
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 0.5  # the normal first backoff


def test_a_download_follows_the_stores_redirect_with_a_callers_http_client(tmp_path):
    record = {
        "id": "art_1",
        "experiment_id": "exp_1",
        "run_id": "run_1",
        "kind": "results",
        "name": "results.json",
    }

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "store.test":
            return httpx.Response(200, content=b"{}")
        if request.url.path.endswith("/content"):
            return httpx.Response(307, headers={"Location": "http://store.test/bucket/key?signature=x"})
        return httpx.Response(200, json=record)

    own = httpx.Client(transport=httpx.MockTransport(answer))  # follow_redirects left False, httpx's default
    with Client(base_url="http://gni.test", http_client=own) as client:
        path = client.artifacts.download("art_1", to=f"{tmp_path}/")
    assert path.read_bytes() == b"{}"
    own.close()


def test_an_error_body_broken_mid_read_is_a_connection_error_after_the_retries():
    closed = []

    class Broken(httpx.SyncByteStream):
        def __iter__(self):
            yield b'{"error": '
            raise httpx.ReadError("connection reset")

        def close(self) -> None:
            closed.append(True)

    record = {"id": "art_1", "experiment_id": "exp_1", "run_id": None, "kind": "figure", "name": "a.png"}
    requests = []

    def answer(request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/content"):
            return httpx.Response(200, json=record)
        requests.append(request)
        return httpx.Response(503, stream=Broken())

    client = Client(base_url="http://gni.test", transport=httpx.MockTransport(answer), max_retries=2)
    client._sleep = lambda seconds: None  # type: ignore[method-assign]
    with pytest.raises(APIConnectionError):
        client.artifacts.download("art_1", to="unused/")
    assert len(requests) == 3 and len(closed) == 3


def test_cancels_carry_one_idempotency_key_across_retries():
    run = {"id": "run_1", "experiment_id": "exp_1", "status": "running", "position": 0}
    for cancel, answer in (
        (lambda c: c.runs.cancel("run_1"), run),
        (lambda c: c.experiments.cancel("exp_1"), EXPERIMENT),
    ):
        script = Script(httpx.ReadTimeout("answer lost"), httpx.Response(200, json=answer))
        cancel(make_client(script, []))
        keys = [r.headers.get("Idempotency-Key") for r in script.requests]
        assert len(keys) == 2 and keys[0] and keys[0] == keys[1]
