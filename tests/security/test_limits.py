"""Limits answer 413, 422 or 429 and name the limit and the value asked for.

The request-rate tests marked ``redis`` need Redis at ``GNI_TEST_REDIS_URL`` (default
127.0.0.1:6379): skipped when it is unreachable, failed under ``CI=true``. Each uses a key prefix
of its own on that shared server.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from gni_engine.errors import SpecError
from gni_engine.spec import RunSpec
from gni_service.limits import RateLimiter, RequestRateLimiter, build_rate_limiter, parameter_count
from gni_service.redis_rate_limit import RedisRateLimiter
from gni_service.settings import ServiceSettings
from tests.support import missing_service


def test_parameter_count_matches_torch(tiny_spec):
    import torch

    spec = RunSpec.model_validate(tiny_spec)
    dims = [1, 16, 16, 1]
    layers = [torch.nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)]
    assert parameter_count(spec) == sum(p.numel() for layer in layers for p in layer.parameters())


@pytest.mark.parametrize(
    ("change", "limit", "value"),
    [
        ({"training": {"steps": 1001}}, "max_run_steps", 1001),
        ({"model": {"hidden": [2000, 2000]}}, "max_model_parameters", 4_008_001),
        ({"data": {"name": "sinusoids", "n_points": 5000, "frequencies": [1.0]}}, "max_data_points", 5000),
    ],
)
def test_runs_too_large_are_422_naming_the_limit(
    sqlite_url, make_app, client_of, error_of, tiny_spec, change, limit, value
):
    settings = {"max_run_steps": 1000, "max_model_parameters": 1_000_000, "max_data_points": 4096}
    client = client_of(make_app(sqlite_url, **settings))
    field = next(iter(change))
    base_loc = {"max_run_steps": "base.training.steps"}.get(limit, f"base.{field}")
    for body, loc in (
        ({"base": {**tiny_spec, **change}}, base_loc),
        # An axis that makes one run too large is caught too, whatever the base, and named.
        ({"base": tiny_spec, "axes": {field: [tiny_spec[field], *change.values()]}}, f"axes.{field}"),
    ):
        for dry_run in ("false", "true"):
            response = client.post(f"/v1/experiments?dry_run={dry_run}", json=body)
            error = error_of(response, 422, "limit_exceeded")
            assert limit in error["message"] and str(value) in error["message"]
            [detail] = error["details"]
            assert (detail["limit"], detail["value"], detail["loc"]) == (limit, value, loc)
    if field == "model":  # a dotted axis inside the field the limit is about
        body = {"base": tiny_spec, "axes": {"model.hidden": [[16], [2000, 2000]]}}
        [detail] = error_of(client.post("/v1/experiments", json=body), 422, "limit_exceeded")["details"]
        assert detail["loc"] == "axes.model.hidden" and detail["msg"].startswith(
            "axes.model.hidden=[2000, 2000]"
        )
    assert client.post("/v1/experiments", json={"base": tiny_spec}).status_code == 202


def test_sweeps_too_large_are_422_without_expanding_them(
    sqlite_url, make_app, client_of, error_of, tiny_spec
):
    client = client_of(make_app(sqlite_url, max_sweep_runs=100))
    # 50,000 runs whose model axis alone has 50 values: refused before any of it is expanded.
    huge = {"seed": list(range(1000)), "model.hidden": [[w] for w in range(1, 51)]}
    started = time.perf_counter()
    error = error_of(
        client.post("/v1/experiments", json={"base": tiny_spec, "axes": huge}), 422, "limit_exceeded"
    )
    assert "50000 runs" in error["message"] and "max_sweep_runs" in error["message"]
    assert time.perf_counter() - started < 5.0  # expanding 50,000 specs takes about 25 s


def test_too_many_active_runs_per_key_is_429(sqlite_url, make_app, client_of, error_of, tiny_spec):
    handle = make_app(sqlite_url, auth="required", max_active_runs_per_key=5)
    client = client_of(handle)
    alice = {"Authorization": f"Bearer {handle.new_key('alice')}"}
    bob = {"Authorization": f"Bearer {handle.new_key('bob')}"}
    body = {"base": tiny_spec, "axes": {"seed": [0, 1, 2]}}
    assert client.post("/v1/experiments", json=body, headers=alice).status_code == 202
    response = client.post("/v1/experiments", json=body, headers=alice)
    error = error_of(response, 429, "too_many_requests")
    assert "max_active_runs_per_key" in error["message"] and error["details"]["active"] == 3
    assert int(response.headers["Retry-After"]) >= 1
    assert client.post("/v1/experiments", json=body, headers=bob).status_code == 202  # per key


def test_runs_that_reuse_results_do_not_count_as_active(sqlite_url, make_app, client_of, error_of, tiny_spec):
    from sqlalchemy import func, select

    import gni_engine
    from gni_engine.provenance import engine_fingerprint
    from gni_service.experiments import refresh_experiment
    from gni_service.models import Experiment, Run, RunStatus, utcnow

    handle = make_app(sqlite_url, auth="required", max_active_runs_per_key=2)
    client = client_of(handle)
    alice = {"Authorization": f"Bearer {handle.new_key('alice')}"}
    first = client.post("/v1/experiments", json={"base": tiny_spec, "axes": {"seed": [0, 1]}}, headers=alice)
    assert first.status_code == 202
    with handle.database.transaction() as session:  # both runs finish (by hand: no worker here)
        for run in session.scalars(select(Run).where(Run.experiment_id == first.json()["id"])):
            run.status = RunStatus.succeeded
            run.summary = {
                "engine_version": gni_engine.__version__,
                "engine_fingerprint": engine_fingerprint(),
            }
            run.started_at = run.finished_at = utcnow()
        session.flush()
        refresh_experiment(session, first.json()["id"])

    def submit(seeds: list[int]) -> object:
        body = {"base": tiny_spec, "axes": {"seed": seeds}, "reuse_results": True}
        return client.post("/v1/experiments", json=body, headers=alice)

    reused = submit([0, 1, 2])  # three runs, two reused: one to train, under the limit of 2
    assert reused.status_code == 202, reused.text
    with handle.database.reading() as session:
        before = session.scalar(select(func.count()).select_from(Experiment))
    refused = submit([0, 1, 2, 3, 4])  # seeds 2–4 to train (2 is queued, not finished) + 1 active > 2
    error = error_of(refused, 429, "too_many_requests")
    assert error["details"] == {"limit": "max_active_runs_per_key", "max": 2, "active": 1, "requested": 3}
    with handle.database.reading() as session:
        assert session.scalar(select(func.count()).select_from(Experiment)) == before  # nothing stored


def test_request_rate_per_key_is_429_with_retry_after(sqlite_url, make_app, client_of, error_of):
    handle = make_app(sqlite_url, auth="required", rate_limit_per_s=0.5, rate_limit_burst=3)
    client = client_of(handle)
    alice = {"Authorization": f"Bearer {handle.new_key('alice')}"}
    bob = {"Authorization": f"Bearer {handle.new_key('bob')}"}
    assert [client.get("/v1/experiments", headers=alice).status_code for _ in range(3)] == [200] * 3
    response = client.get("/v1/experiments", headers=alice)
    error = error_of(response, 429, "too_many_requests")
    assert "rate_limit_per_s" in str(error["details"]) and 1 <= int(response.headers["Retry-After"]) <= 2
    assert client.get("/v1/experiments", headers=bob).status_code == 200
    assert client.get("/healthz").status_code == 200  # probes are not limited


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] = 0.5
    assert limiter.acquire("k") == 0.0 and limiter.acquire("k") == pytest.approx(0.5)
    assert RateLimiter(rate=0.0, burst=1).acquire("k") == 0.0  # 0 turns it off


@pytest.mark.parametrize("declared", [True, False])
def test_bodies_too_large_are_413(sqlite_url, make_app, client_of, error_of, tiny_spec, declared):
    client = client_of(make_app(sqlite_url, max_body_bytes=4096))
    padding = {"name": "x" * 200, "base": tiny_spec, "axes": {"seed": list(range(2000))}}
    raw = json.dumps(padding).encode()
    if declared:
        response = client.post("/v1/experiments", content=raw, headers={"Content-Type": "application/json"})
    else:
        chunks = (raw[i : i + 1024] for i in range(0, len(raw), 1024))  # streamed, no Content-Length
        response = client.post(
            "/v1/experiments", content=chunks, headers={"Content-Type": "application/json"}
        )
    error = error_of(response, 413, "payload_too_large")
    assert error["details"] == {"max_bytes": 4096}


def test_the_polled_run_read_is_rate_limited_like_every_route(sqlite_url, make_app, client_of, error_of):
    """``GET /v1/runs/{id}`` identifies its caller itself: the same 401, 404 and 429 as the others."""
    handle = make_app(sqlite_url, auth="required", rate_limit_per_s=0.5, rate_limit_burst=2)
    client = client_of(handle)
    alice = {"Authorization": f"Bearer {handle.new_key('alice')}"}
    assert [client.get("/v1/runs/run_x", headers=alice).status_code for _ in range(2)] == [404, 404]
    response = client.get("/v1/runs/run_x", headers=alice)
    error = error_of(response, 429, "too_many_requests")
    assert error["details"]["limit"] == "rate_limit_per_s" and response.headers["Retry-After"] == "2"
    # One budget per key across routes: the listing is refused as well.
    error_of(client.get("/v1/experiments", headers=alice), 429, "too_many_requests")


# ------------------------------------------------------------------------- shared limits (Redis)
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("GNI_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        missing_service(f"Redis is not reachable at {url}: {error}")
    finally:
        client.close()
    return url


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted afterwards."""
    prefix = f"gni-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def limiters() -> Iterator[Callable[..., RedisRateLimiter]]:
    made: list[RedisRateLimiter] = []

    def make(url: str, rate: float, burst: int, **options: Any) -> RedisRateLimiter:
        made.append(RedisRateLimiter(url, rate, burst, **options))
        return made[-1]

    yield make
    for limiter in made:
        limiter.close()


@pytest.mark.redis
def test_limiters_sharing_redis_enforce_one_budget(redis_url, key_prefix, limiters):
    """Two limiters (two API processes) draw on one budget: burst at once, then the rate."""
    first, second = (limiters(redis_url, 10.0, 3, key_prefix=key_prefix) for _ in range(2))
    waits = [limiter.acquire("key:alice") for limiter in (first, second, first, second)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(0.1, abs=0.03)  # one request every 1/rate s after the burst
    assert first.acquire("key:bob") == 0.0  # budgets are per key
    time.sleep(0.12)
    assert second.acquire("key:alice") == 0.0 and first.acquire("key:alice") > 0.0  # refilled: one


@pytest.mark.redis
def test_api_processes_sharing_redis_answer_429_with_retry_after(
    sqlite_url, make_app, client_of, error_of, redis_url, key_prefix
):
    shared = {
        "auth": "required",
        "rate_limit_per_s": 0.25,
        "rate_limit_burst": 3,
        "rate_limit_redis_url": redis_url,
        "broker_key_prefix": key_prefix,
    }
    first, second = make_app(sqlite_url, **shared), make_app(sqlite_url, **shared)
    clients = [client_of(first), client_of(second)]
    alice = {"Authorization": f"Bearer {first.new_key('alice')}"}
    bob = {"Authorization": f"Bearer {first.new_key('bob')}"}
    statuses = [clients[i % 2].get("/v1/experiments", headers=alice).status_code for i in range(3)]
    assert statuses == [200, 200, 200]  # one burst of 3 between both processes, not 3 each
    for client in clients:
        response = client.get("/v1/runs/run_x", headers=alice)
        error = error_of(response, 429, "too_many_requests")
        assert error["details"] == {"limit": "rate_limit_per_s", "max": 0.25, "burst": 3}
        assert response.headers["Retry-After"] == "4"  # 1 / rate, the wait rounded up
    assert clients[1].get("/v1/experiments", headers=bob).status_code == 200


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_redis_lets_requests_pass_and_warns_once(sqlite_url, make_app, client_of, caplog):
    caplog.set_level(logging.WARNING, logger="gni.rate_limit")
    url = f"redis://:Sup3r-Secret@127.0.0.1:{_closed_port()}/0"
    handle = make_app(
        sqlite_url, auth="required", rate_limit_per_s=0.25, rate_limit_burst=1, rate_limit_redis_url=url
    )
    client = client_of(handle)
    alice = {"Authorization": f"Bearer {handle.new_key('alice')}"}
    assert [client.get("/v1/experiments", headers=alice).status_code for _ in range(4)] == [200] * 4
    warnings = [r for r in caplog.records if r.name == "gni.rate_limit"]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    assert "Sup3r-Secret" not in caplog.text


def test_a_redis_that_does_not_answer_costs_one_timeout_per_recheck(limiters):
    """Connected but silent (a hung server): the first request waits the timeout, the next do not."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        limiter = limiters(url, 1.0, 1, timeout_s=0.2, recheck_after_s=60.0)
        started = time.perf_counter()
        assert limiter.acquire("key:alice") == 0.0
        first = time.perf_counter() - started
        assert [limiter.acquire("key:alice") for _ in range(20)] == [0.0] * 20
        rest = time.perf_counter() - started - first
    assert 0.15 <= first < 2.0 and rest < 0.19  # the 20 rechecks together took less than one timeout


def test_the_settings_pick_the_limiter(tmp_path):
    def built(**values: Any) -> RequestRateLimiter:
        return build_rate_limiter(ServiceSettings(data_folder=tmp_path, **values))

    assert isinstance(built(), RateLimiter)  # the embedded mode: one process, its own budgets
    assert isinstance(built(broker_url="redis://broker:6379/0"), RateLimiter)  # broker unused inprocess
    shared = built(executor="celery", broker_url="redis://broker:6379/0", broker_key_prefix="stack1:")
    assert isinstance(shared, RedisRateLimiter) and shared.key_prefix == "stack1:gni:rate:"
    dedicated = built(rate_limit_redis_url="redis://limits:6379/1")
    assert isinstance(dedicated, RedisRateLimiter) and dedicated.key_prefix == "gni:rate:"
    for limiter in (shared, dedicated):
        limiter.close()


def test_the_log_level_is_read_in_any_case(tmp_path):
    for written in ("debug", "Debug", "DEBUG"):
        settings = ServiceSettings.from_env({"GNI_DATA_FOLDER": str(tmp_path), "GNI_LOG_LEVEL": written})
        assert settings.log_level == "DEBUG"
    with pytest.raises(SpecError, match="GNI_LOG_LEVEL"):
        ServiceSettings.from_env({"GNI_DATA_FOLDER": str(tmp_path), "GNI_LOG_LEVEL": "loud"})
