"""POST/GET /v1/experiments: creation, dry runs, validation, listing, cancellation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from gni_service.experiments import NOTHING_TO_DRAW, refresh_experiment
from gni_service.models import Experiment, Run, RunStatus
from gni_service.pagination import encode_cursor


def _create(client, spec, axes, name="sweep"):
    response = client.post("/v1/experiments", json={"name": name, "base": spec, "axes": axes})
    assert response.status_code == 202, response.text
    return response


def test_create_expands_the_sweep_stores_runs_and_enqueues_batches(client, session, executor, tiny_spec):
    axes = {"training.mode": ["baseline", "gni"], "noise.sigma": [0.05, 0.1], "seed": [0, 1, 2]}
    response = _create(client, tiny_spec, axes)
    body = response.json()
    assert response.headers["location"] == f"/v1/experiments/{body['id']}"
    assert body["run_count"] == 12
    assert body["status"] == "queued"
    assert body["counts"] == {"queued": 12, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert body["axes"] == axes
    runs = session.scalars(select(Run).where(Run.experiment_id == body["id"]).order_by(Run.position)).all()
    expected = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    assert [run.coords for run in runs] == expected
    assert all(run.spec["training"]["mode"] == run.coords["training.mode"] for run in runs)
    assert all(run.spec["noise"]["sigma"] == run.coords["noise.sigma"] for run in runs)
    assert {run.batch_key for run in runs} == set(executor.enqueued)
    assert len({run.spec_hash for run in runs}) == 12


def test_run_figures_is_stored_shown_and_checked(client, session, tiny_spec):
    assert _create(client, tiny_spec, {}).json()["run_figures"] is True
    body = {"base": tiny_spec, "run_figures": False}
    created = client.post("/v1/experiments", json=body)
    assert created.status_code == 202 and created.json()["run_figures"] is False
    assert session.get(Experiment, created.json()["id"]).run_figures is False
    assert client.get(f"/v1/experiments/{created.json()['id']}").json()["run_figures"] is False
    refused = client.post("/v1/experiments", json={**body, "run_figures": "sometimes"})
    assert refused.status_code == 422 and "run_figures" in refused.text


def test_dry_run_plans_without_storing(client, session, executor, tiny_spec):
    before = session.scalar(select(func.count()).select_from(Experiment))
    response = client.post(
        "/v1/experiments?dry_run=true", json={"base": tiny_spec, "axes": {"seed": [0, 1, 2, 3]}}
    )
    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["dry_run"] is True
    assert plan["run_count"] == 4
    assert sorted(i for batch in plan["batches"] for i in batch) == [0, 1, 2, 3]
    assert plan["batch_count"] == len(plan["batches"]) == 1  # same shapes: one stacked batch
    assert plan["estimated_flops"] > 0
    assert [r["coords"] for r in plan["runs"]] == [{"seed": s} for s in range(4)]
    assert session.scalar(select(func.count()).select_from(Experiment)) == before
    assert executor.enqueued == []


def test_invalid_spec_names_each_field(client, tiny_spec):
    spec = {**tiny_spec, "noise": {"sigma": -1.0}, "training": {"steps": 0}}
    response = client.post("/v1/experiments", json={"base": spec})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "spec_error"
    locs = {d["loc"] for d in error["details"]}
    assert locs == {"base.noise.sigma", "base.training.steps"}
    assert "sigma must be finite and >= 0" in error["message"]


def test_unknown_field_and_unknown_axis_are_named(client, tiny_spec):
    response = client.post("/v1/experiments", json={"base": {**tiny_spec, "colour": "red"}})
    assert response.status_code == 422
    assert [d["loc"] for d in response.json()["error"]["details"]] == ["base.colour"]
    response = client.post("/v1/experiments", json={"base": tiny_spec, "axes": {"noise.sigam": [0.1]}})
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details[0]["loc"] == "axes"
    assert "'sigam' is not a field of noise" in details[0]["msg"]


def test_an_invalid_value_on_an_axis_names_the_run(client, tiny_spec):
    response = client.post("/v1/experiments", json={"base": tiny_spec, "axes": {"noise.sigma": [0.1, -2.0]}})
    assert response.status_code == 422
    error = response.json()["error"]
    assert "noise.sigma=-2.0" in error["message"]
    assert error["details"][0]["loc"] == "noise.sigma"


def test_too_large_a_sweep_is_refused(client, tiny_spec):
    response = client.post("/v1/experiments", json={"base": tiny_spec, "axes": {"seed": list(range(2001))}})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["details"][0]["loc"] == "axes"
    assert "2001 runs" in error["message"]
    assert error["details"][0]["limit"] == "max_sweep_runs"
    assert (error["details"][0]["value"], error["details"][0]["max"]) == (2001, 2000)


def test_body_must_be_json_and_name_a_source(client, tiny_spec):
    response = client.post(
        "/v1/experiments", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == "body"
    response = client.post("/v1/experiments", json={})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == "base"
    response = client.post("/v1/experiments", json={"base": tiny_spec, "overrides": {"steps": 5}})
    assert response.json()["error"]["details"][0]["loc"] == "overrides"


def test_get_reports_counts_progress_and_summary(client, session, tiny_spec):
    experiment_id = _create(client, tiny_spec, {"seed": [0, 1, 2]}).json()["id"]
    runs = session.scalars(select(Run).where(Run.experiment_id == experiment_id).order_by(Run.position)).all()
    session.execute(
        update(Run)
        .where(Run.id == runs[0].id)
        .values(status=RunStatus.succeeded, progress_step=30, summary={"train_loss": 0.5, "test_loss": 0.7})
    )
    session.execute(
        update(Run)
        .where(Run.id == runs[1].id)
        .values(status=RunStatus.succeeded, progress_step=30, summary={"train_loss": 0.3, "test_loss": 0.9})
    )
    session.execute(
        update(Run).where(Run.id == runs[2].id).values(status=RunStatus.running, progress_step=15)
    )
    from gni_service.experiments import refresh_experiment

    refresh_experiment(session, experiment_id)
    body = client.get(f"/v1/experiments/{experiment_id}").json()
    assert body["status"] == "running"
    assert body["counts"]["succeeded"] == 2 and body["counts"]["running"] == 1
    assert body["progress"] == {"steps_done": 75, "steps_total": 90, "fraction": 75 / 90}
    assert body["summary"]["summary.train_loss"]["mean"] == 0.4
    assert body["summary"]["summary.test_loss"]["n"] == 2
    assert "summary.accuracy" not in body["summary"]


def test_unknown_experiment_is_404(client):
    response = client.get("/v1/experiments/exp_missing")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"type": "not_found", "message": "no experiment with id 'exp_missing'", "details": None}
    }
    assert client.post("/v1/experiments/exp_missing/cancel").status_code == 404


def test_list_is_newest_first_paginated_and_filtered(client, session, tiny_spec):
    ids = [_create(client, tiny_spec, {}, name=f"exp-{i}").json()["id"] for i in range(5)]
    base = datetime(2030, 1, 1, tzinfo=UTC)
    for i, experiment_id in enumerate(ids):  # distinct, known creation times
        session.execute(
            update(Experiment)
            .where(Experiment.id == experiment_id)
            .values(created_at=base + timedelta(minutes=i))
        )
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "created_after": base.isoformat()}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/experiments", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    by_name = client.get("/v1/experiments", params={"name": "exp-3"}).json()["items"]
    assert [e["id"] for e in by_name] == [ids[3]]
    window = client.get(
        "/v1/experiments",
        params={
            "created_after": (base + timedelta(minutes=1)).isoformat(),
            "created_before": (base + timedelta(minutes=3)).isoformat(),
        },
    ).json()["items"]
    assert [e["id"] for e in window] == [ids[2], ids[1]]
    queued = client.get("/v1/experiments", params={"status": "queued", "name": "exp-0"}).json()["items"]
    assert [e["id"] for e in queued] == [ids[0]]
    assert (
        client.get("/v1/experiments", params={"status": "succeeded", "name": "exp-0"}).json()["items"] == []
    )


def test_bad_cursor_and_bad_status_are_422(client):
    response = client.get("/v1/experiments", params={"cursor": "garbage!"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == "cursor"
    # Well-formed but forged: a moment without a time zone, one UTC cannot hold, a non-string id.
    for created_at in ("2026-01-01T00:00:00", "9999-12-31T23:59:59-23:59"):
        forged = encode_cursor({"kind": "experiments", "created_at": created_at, "id": "exp_x"})
        response = client.get("/v1/experiments", params={"cursor": forged})
        assert response.status_code == 422, (created_at, response.text)
        assert response.json()["error"]["details"][0]["loc"] == "cursor"
    response = client.get("/v1/experiments", params={"status": "sleeping"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == "status"


def test_cancel_cancels_queued_runs_is_idempotent_and_conflicts_when_done(client, session, tiny_spec):
    experiment_id = _create(client, tiny_spec, {"seed": [0, 1]}).json()["id"]
    running = session.scalars(select(Run).where(Run.experiment_id == experiment_id, Run.position == 1)).one()
    session.execute(update(Run).where(Run.id == running.id).values(status=RunStatus.running))
    body = client.post(f"/v1/experiments/{experiment_id}/cancel").json()
    assert body["cancel_requested"] is True
    assert body["counts"]["cancelled"] == 1 and body["counts"]["running"] == 1
    session.expire_all()
    assert session.get(Run, running.id).cancel_requested is True
    again = client.post(f"/v1/experiments/{experiment_id}/cancel")
    assert again.status_code == 200
    other = _create(client, tiny_spec, {}).json()["id"]
    session.execute(update(Run).where(Run.experiment_id == other).values(status=RunStatus.succeeded))
    refresh_experiment(session, other)
    conflict = client.post(f"/v1/experiments/{other}/cancel")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["type"] == "conflict"
    assert conflict.headers["X-Should-Retry"] == "false"  # asking again gets the same answer


def test_a_preset_with_overrides_becomes_a_sweep(client, session):
    body = {"preset": "spectral-bias", "overrides": {"steps": 100, "seeds": 2}}
    plan = client.post("/v1/experiments?dry_run=true", json=body).json()
    assert plan["run_count"] == 6  # three arms × two seeds
    created = client.post("/v1/experiments", json=body)
    assert created.status_code == 202
    experiment = created.json()
    assert experiment["name"] == experiment["preset"] == "spectral-bias"
    assert experiment["base"]["training"]["steps"] == 100
    assert experiment["axes"] == {"training.mode": ["baseline", "gni", "explicit"], "seed": [0, 1]}


def test_an_unknown_preset_or_variant_is_named(client):
    response = client.post("/v1/experiments", json={"preset": "nope"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == "preset"
    assert "spectral-bias" in response.json()["error"]["message"]
    response = client.post(
        "/v1/experiments", json={"preset": "spectral-bias", "overrides": {"variant": "mnist"}}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == "overrides.variant"
    response = client.post("/v1/experiments", json={"preset": "spectral-bias", "base": {}})
    assert response.json()["error"]["details"][0]["loc"] == "preset"
    response = client.post(
        "/v1/experiments", json={"preset": "spectral-bias", "overrides": {"axes": {"x.y": [1]}}}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == "overrides.axes"


def test_preset_axes_can_be_replaced(client):
    body = {
        "preset": "spectral-bias",
        "overrides": {"steps": 50, "seeds": 3, "axes": {"training.mode": ["baseline", "gni"]}},
    }
    plan = client.post("/v1/experiments?dry_run=true", json=body).json()
    assert plan["run_count"] == 6
    assert plan["runs"][0]["coords"] == {"training.mode": "baseline", "seed": 0}


@pytest.mark.parametrize("parameter", ["created_after", "created_before"])
@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00"])
def test_a_creation_time_outside_utc_years_is_422_naming_the_parameter(client, parameter, moment):
    response = client.get("/v1/experiments", params={parameter: moment})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["loc"] == parameter


def test_overlapping_axes_are_refused_naming_both(client, tiny_spec):
    for axes in (
        {"data.n_points": [64], "data": [{"name": "sinusoids"}]},
        {"noise.sigma": [0.1, 0.2], "noise": [{"sigma": 0.5}]},
    ):
        response = client.post("/v1/experiments?dry_run=true", json={"base": tiny_spec, "axes": axes})
        assert response.status_code == 422, response.text
        detail = response.json()["error"]["details"][0]
        assert detail["loc"] == "axes"
        outer, inner = sorted(axes, key=len)
        assert f"'{outer}' and '{inner}' overlap" in detail["msg"]


def test_a_boolean_is_not_taken_for_a_number(client, tiny_spec):
    for field, value, loc in (
        ("noise", {"sigma": True}, "base.noise.sigma"),
        ("model", {"hidden": [True]}, "base.model.hidden"),
        ("training", {"steps": True}, "base.training.steps"),
        ("seed", True, "base.seed"),
    ):
        response = client.post("/v1/experiments?dry_run=true", json={"base": {**tiny_spec, field: value}})
        assert response.status_code == 422, (field, response.text)
        details = response.json()["error"]["details"]
        assert [d["loc"] for d in details] == [loc]
        assert "true/false is not a number" in details[0]["msg"]
    # Real booleans still are booleans.
    spec = {**tiny_spec, "model": {**tiny_spec["model"], "bias": False}}
    assert client.post("/v1/experiments?dry_run=true", json={"base": spec}).status_code == 200


def test_an_experiment_without_a_succeeded_run_has_no_figures_to_wait_for(client, session, tiny_spec):
    experiment_id = _create(client, tiny_spec, {"seed": [0, 1]}).json()["id"]
    assert client.get(f"/v1/experiments/{experiment_id}").json()["figures_state"] == "pending"
    session.execute(update(Run).where(Run.experiment_id == experiment_id).values(status=RunStatus.failed))
    refresh_experiment(session, experiment_id)
    session.commit()
    body = client.get(f"/v1/experiments/{experiment_id}").json()
    assert (body["status"], body["figures_state"], body["figures_error"]) == (
        "failed",
        "failed",
        NOTHING_TO_DRAW,
    )


def test_a_page_holds_at_most_max_page_size_items(client, settings, app, tiny_spec):
    app.state.context.settings = settings.model_copy(update={"max_page_size": 2})
    response = client.get("/v1/experiments", params={"limit": 3})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0] == {
        "loc": "limit",
        "msg": "limit: at most 2 items a page (GNI_MAX_PAGE_SIZE)",
    }
    experiment_id = _create(client, tiny_spec, {"seed": [0, 1, 2]}).json()["id"]
    assert client.get(f"/v1/experiments/{experiment_id}/runs", params={"limit": 3}).status_code == 422
    page = client.get(f"/v1/experiments/{experiment_id}/runs", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
