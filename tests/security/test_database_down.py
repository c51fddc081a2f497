"""The database unreachable: 503 with Retry-After and the JSON error shape, /readyz fails, no secret leaks."""

from __future__ import annotations

import logging
import socket

import pytest

PASSWORD = "Sup3r-Secret-db-pw"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("auth", ["disabled", "required"])
def test_requests_answer_503_and_readyz_fails(make_app, client_of, error_of, caplog, tiny_spec, auth):
    url = f"postgresql+psycopg://gni:{PASSWORD}@127.0.0.1:{_closed_port()}/gni?connect_timeout=2"
    caplog.set_level(logging.DEBUG)
    client = client_of(make_app(url, auth=auth))
    key = {"Authorization": "Bearer gni_0123456789ab_" + "k" * 43}
    requests = [
        ("GET", "/v1/experiments", None),
        ("POST", "/v1/experiments", {"base": tiny_spec}),
        ("GET", "/v1/experiments/exp_1/runs", None),
        ("GET", "/v1/runs/run_1", None),
        ("POST", "/v1/runs/run_1/cancel", None),
        ("GET", "/v1/artifacts/art_1/content", None),
    ]
    bodies = []
    for method, path, body in requests:
        response = client.request(method, path, json=body, headers={**key, "Idempotency-Key": "k1"})
        error = error_of(response, 503, "unavailable")
        assert response.headers["Retry-After"].isdigit(), path
        assert "database" in error["message"]
        bodies.append(response.text)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unavailable")
    bodies.append(ready.text)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "gni_database_up 0.0" in metrics.text
    logged = caplog.text  # messages and formatted tracebacks
    for text in [*bodies, logged]:
        assert PASSWORD not in text
        assert key["Authorization"].split()[1] not in text
