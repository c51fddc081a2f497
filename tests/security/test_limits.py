"""Limits answer 413, 422 or 429 and name the limit and the value asked for."""

from __future__ import annotations

import json
import time

import pytest

from gni_engine.spec import RunSpec
from gni_service.limits import RateLimiter, parameter_count


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
    for body in (
        {"base": {**tiny_spec, **change}},
        # An axis that makes one run too large is caught too, whatever the base.
        {"base": tiny_spec, "axes": {next(iter(change)): [tiny_spec[next(iter(change))], *change.values()]}},
    ):
        for dry_run in ("false", "true"):
            response = client.post(f"/v1/experiments?dry_run={dry_run}", json=body)
            error = error_of(response, 422, "limit_exceeded")
            assert limit in error["message"] and str(value) in error["message"]
            [detail] = error["details"]
            assert (detail["limit"], detail["value"]) == (limit, value)
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
