"""Operations: JSON logs carrying request and run ids, X-Request-ID, Prometheus metrics per app."""

from __future__ import annotations

import io
import json
import logging

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from gni_cli.serve_command import embedded_app
from gni_service.models import Run, RunStatus, utcnow
from gni_service.settings import ServiceSettings
from gni_service.structured_logging import configure_logging, log_context


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_logs_are_json_lines_with_request_and_run_ids(sqlite_url, make_app, client_of, tiny_spec):
    stream = io.StringIO()
    client = client_of(make_app(sqlite_url, log_format="json"))
    handler = configure_logging("json", "INFO", stream=stream)  # what the lifespan did, into a buffer
    try:
        experiment = client.post(
            "/v1/experiments", json={"base": tiny_spec}, headers={"X-Request-ID": "req-42"}
        )
        assert experiment.headers["X-Request-ID"] == "req-42"
        run_id = client.get(f"/v1/experiments/{experiment.json()['id']}/runs").json()["items"][0]["id"]
        generated = client.get(f"/v1/runs/{run_id}", headers={"X-Request-ID": "bad id\twith spaces"})
        assert (
            generated.headers["X-Request-ID"] != "bad id\twith spaces"
            and len(generated.headers["X-Request-ID"]) == 32
        )
        with log_context(run_id="run_ctx"):
            logging.getLogger("gni.test").warning("inside a run", extra={"experiment_id": "exp_extra"})
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "api.access"]
    assert any(
        line["request_id"] == "req-42" and "POST /v1/experiments 202" in line["message"] for line in access
    )
    run_lines = [line for line in access if line.get("run_id") == run_id]
    assert run_lines and run_lines[0]["request_id"] == generated.headers["X-Request-ID"]
    assert run_id not in run_lines[0]["message"]  # the template is logged, the id is a field
    [mine] = [line for line in lines if line["logger"] == "gni.test"]
    assert (mine["run_id"], mine["experiment_id"], mine["level"]) == ("run_ctx", "exp_extra", "WARNING")


def test_metrics_report_runs_queue_heartbeats_and_request_durations(
    sqlite_url, make_app, client_of, tiny_spec
):
    handle = make_app(sqlite_url)
    client = client_of(handle)
    other = client_of(make_app(sqlite_url))  # a second app in the same process: its own registry
    client.post("/v1/experiments", json={"base": tiny_spec, "axes": {"seed": [0, 1, 2]}})
    with handle.database.transaction() as session:
        first = session.query(Run).order_by(Run.position).first()
        session.execute(
            update(Run)
            .where(Run.id == first.id)
            .values(status=RunStatus.running, started_at=utcnow(), heartbeat_at=utcnow())
        )
    client.get("/v1/runs/run_unknown")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert samples[("gni_runs", (("status", "queued"),))] == 2.0
    assert samples[("gni_runs", (("status", "running"),))] == 1.0
    assert samples[("gni_queue_depth", ())] == 2.0
    assert 0.0 <= samples[("gni_run_heartbeat_age_seconds", ())] < 60.0
    assert samples[("gni_database_up", ())] == 1.0
    assert samples[("gni_run_duration_seconds_count", ())] == 0.0
    key = ("method", "GET"), ("route", "/v1/runs/{run_id}"), ("status", "404")
    assert samples[("gni_http_request_duration_seconds_count", key)] == 1.0
    post = ("method", "POST"), ("route", "/v1/experiments"), ("status", "202")
    assert samples[("gni_http_request_duration_seconds_count", post)] == 1.0
    assert ("gni_http_request_duration_seconds_count", post) not in _samples(other.get("/metrics").text)


def test_the_embedded_server_without_keys_answers_only_loopback_names(tmp_path):
    # DNS rebinding: a page on attacker.example re-pointed to 127.0.0.1 sends its own Host header.
    open_settings = ServiceSettings(data_folder=tmp_path / "open", migrate_on_start=True)
    with TestClient(embedded_app(open_settings), base_url="http://127.0.0.1:8000") as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 200
        assert client.get("/v1/experiments", headers={"Host": "attacker.example"}).status_code == 400
    keyed = ServiceSettings(data_folder=tmp_path / "keyed", migrate_on_start=True, auth="required")
    with TestClient(embedded_app(keyed), base_url="http://gni.example.org") as client:
        assert client.get("/healthz").status_code == 200  # with keys, any name (behind a proxy)
