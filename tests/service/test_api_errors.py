"""One error shape everywhere: unknown routes, wrong methods, huge bodies, crashes, a lost database."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from api.dependencies import reading_session
from gni_service.context import ServiceContext
from gni_service.db import Database
from gni_service.migrate import upgrade_database

ERROR_KEYS = {"type", "message", "details"}


def test_healthz_and_readyz(client, caplog):
    assert client.get("/healthz").json() == {"status": "ok"}
    with caplog.at_level(logging.INFO):
        for _ in range(3):  # an orchestrator's probes: no log lines of their own
            ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "storage": "ok", "executor": "ok"}}
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []


def test_unknown_route_and_method_answer_json(client):
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and set(missing.json()["error"]) == ERROR_KEYS
    wrong = client.delete("/v1/experiments")
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "method_not_allowed"


def test_too_large_a_body_is_413(client, settings):
    big = b'{"name": "' + b"x" * (settings.max_body_bytes + 1) + b'"}'
    response = client.post("/v1/experiments", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"

    def chunks():  # no Content-Length: counted as it streams in
        for _ in range(4):
            yield b"x" * (settings.max_body_bytes // 2)

    response = client.post("/v1/experiments", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_an_unexpected_error_is_a_bare_500(app: FastAPI, caplog):
    def broken():
        raise RuntimeError("secret internals /etc/passwd")

    app.dependency_overrides[reading_session] = broken
    app.state.context.database.single_reads = broken  # the polled GET /v1/runs/{id} reads through it
    with TestClient(app, raise_server_exceptions=False) as client:
        responses = [client.get("/v1/experiments/exp_x"), client.get("/v1/runs/run_x")]
    for response in responses:
        assert response.status_code == 500
        assert response.json() == {
            "error": {
                "type": "internal_error",
                "message": "internal server error; it has been logged",
                "details": None,
            }
        }
        assert "secret" not in response.text and "Traceback" not in response.text
    assert caplog.text.count("secret internals") >= 2  # logged for the operator, each time


def test_an_unreachable_database_is_503_with_retry_after(settings, store, executor, caplog):
    database = Database("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    context = ServiceContext(settings, database, store, executor)
    with TestClient(create_app(context=context), raise_server_exceptions=False) as client:
        response = client.get("/v1/experiments")
        assert response.status_code == 503
        # the operator's log says why, in the driver's words: not only the exception's class
        assert "database unavailable: OperationalError: connection" in caplog.text
        assert "refused" in caplog.text.lower()
        assert response.headers["retry-after"] == "5"
        assert response.json()["error"]["type"] == "unavailable"
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unavailable")
    database.dispose()


def test_readiness_wants_a_migrated_schema_not_behind_the_code(settings, store, executor, tmp_path):
    url = f"sqlite:///{tmp_path / 'schema.sqlite3'}"
    database = Database(url)
    context = ServiceContext(settings.model_copy(update={"database_url": url}), database, store, executor)
    with TestClient(create_app(context=context), raise_server_exceptions=False) as client:

        def database_check() -> tuple[int, str]:
            ready = client.get("/readyz")
            return ready.status_code, ready.json()["checks"]["database"]

        status, said = database_check()  # never migrated
        assert status == 503 and "schema not migrated" in said and "alembic upgrade head" in said
        upgrade_database(url, "20261127_run_figures")  # behind this code
        status, said = database_check()
        assert status == 503 and "schema revision 20261127_run_figures is behind" in said
        upgrade_database(url)
        assert database_check() == (200, "ok")
        with database.engine.begin() as connection:  # a newer release migrated it (rolling upgrade)
            connection.execute(text("UPDATE alembic_version SET version_num = '20991231_future'"))
        assert database_check() == (200, "ok")
    database.dispose()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_openapi_documents_every_route_with_error_shapes(client):
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    expected = {
        "/v1/experiments": {"get", "post"},
        "/v1/experiments/{experiment_id}": {"get", "delete"},
        "/v1/experiments/{experiment_id}/cancel": {"post"},
        "/v1/experiments/{experiment_id}/runs": {"get"},
        "/v1/experiments/{experiment_id}/aggregate": {"get"},
        "/v1/experiments/{experiment_id}/artifacts": {"get"},
        "/v1/runs/{run_id}": {"get"},
        "/v1/runs/{run_id}/cancel": {"post"},
        "/v1/runs/{run_id}/metrics": {"get"},
        "/v1/runs/{run_id}/artifacts": {"get"},
        "/v1/artifacts/{artifact_id}": {"get"},
        "/v1/artifacts/{artifact_id}/content": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
    }
    assert {path: set(ops) for path, ops in paths.items()} == expected
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert "422" in operation["responses"] and "500" in operation["responses"], (method, path)
            if "{" in path:
                assert "404" in operation["responses"], (method, path)
    create = paths["/v1/experiments"]["post"]
    assert {"200", "202"} <= set(create["responses"])
    schemas = document["components"]["schemas"]
    assert schemas["ExperimentCreate"]["examples"][0]["axes"] == {
        "training.mode": ["baseline", "gni"],
        "seed": [0, 1, 2],
    }
    assert "RunSpec" in schemas and "ErrorBody" in schemas
