"""Runs of an experiment: filters, sorting, pagination, one run, metrics, artifacts, aggregate."""

from __future__ import annotations

import hashlib
import math
import statistics

import pytest
from sqlalchemy import select, update

from api.schemas import RunOut
from gni_service.artifacts import store_artifact
from gni_service.experiments import refresh_experiment
from gni_service.metrics import insert_metric_points
from gni_service.models import Run, RunStatus, utcnow
from gni_service.pagination import encode_cursor

AXES = {"training.mode": ["baseline", "gni"], "noise.sigma": [0.05, 0.1], "seed": [0, 1, 2]}


def _results(position: int, coords: dict) -> dict:
    """Made-up but distinct results: test loss depends on mode, sigma and seed."""
    gni = coords["training.mode"] == "gni"
    test_loss = 1.0 - 0.3 * gni + 2.0 * coords["noise.sigma"] + 0.01 * coords["seed"] ** 2
    return {"test_loss": test_loss, "train_loss": test_loss / 2, "ece": 0.01 * position, "device": "cpu"}


@pytest.fixture
def finished(client, session, tiny_spec):
    """A 12-run experiment whose runs all succeeded with the results of :func:`_results`."""
    experiment_id = client.post("/v1/experiments", json={"base": tiny_spec, "axes": AXES}).json()["id"]
    runs = session.scalars(select(Run).where(Run.experiment_id == experiment_id).order_by(Run.position)).all()
    for run in runs:
        session.execute(
            update(Run)
            .where(Run.id == run.id)
            .values(status=RunStatus.succeeded, summary=_results(run.position, run.coords), device="cpu")
        )
    refresh_experiment(session, experiment_id)
    session.expire_all()
    return experiment_id, runs


def _positions(client, experiment_id, params):
    response = client.get(f"/v1/experiments/{experiment_id}/runs", params=params)
    assert response.status_code == 200, response.text
    return [run["position"] for run in response.json()["items"]]


def test_filters_on_coordinates_spec_fields_and_summary(client, finished):
    experiment_id, runs = finished
    gni = [r.position for r in runs if r.coords["training.mode"] == "gni"]
    assert _positions(client, experiment_id, {"training.mode": "gni"}) == gni
    sigma = [r.position for r in runs if r.coords["noise.sigma"] == 0.1]
    assert _positions(client, experiment_id, {"noise.sigma": "0.1"}) == sigma
    low_ece = [r.position for r in runs if 0.01 * r.position < 0.05]
    assert _positions(client, experiment_id, {"filter": "summary.ece<0.05"}) == low_ece
    both = [p for p in gni if p in sigma and 0.01 * p >= 0.08]
    assert (
        _positions(
            client,
            experiment_id,
            [("training.mode", "gni"), ("noise.sigma", "0.1"), ("filter", "summary.ece>=0.08")],
        )
        == both
    )
    # A spec field that is not an axis is read from the stored spec.
    assert _positions(client, experiment_id, {"model.activation": "relu"}) == list(range(12))
    assert _positions(client, experiment_id, {"training.steps": "31"}) == []


def test_filters_written_straight_into_the_query_string(client, finished):
    experiment_id, runs = finished
    url = f"/v1/experiments/{experiment_id}/runs?summary.ece<0.05&training.mode!=gni"
    positions = [run["position"] for run in client.get(url).json()["items"]]
    assert positions == [
        r.position for r in runs if 0.01 * r.position < 0.05 and r.coords["training.mode"] != "gni"
    ]
    url = f"/v1/experiments/{experiment_id}/runs?summary.ece<=0.05"
    assert [run["position"] for run in client.get(url).json()["items"]] == [0, 1, 2, 3, 4, 5]


def test_not_equal_keeps_runs_without_the_value(client, finished):
    # NOT (NULL = 5) is NULL in SQL: runs whose data_seed is null are not 5 either.
    experiment_id, _ = finished
    assert _positions(client, experiment_id, {"data_seed": "null"}) == list(range(12))
    assert _positions(client, experiment_id, {"filter": "data_seed!=5"}) == list(range(12))
    assert _positions(client, experiment_id, {"filter": "summary.missing!=1"}) == list(range(12))
    assert _positions(client, experiment_id, {"filter": "training.mode!=gni"}) == [0, 1, 2, 3, 4, 5]


def test_a_list_matches_whatever_the_numbers_look_like(client, finished):
    # The spec stores frequencies [1.0, 3.0, 5.0]; [1,3,5] is the same list on either database.
    experiment_id, _ = finished
    for written in ("[1,3,5]", "[1.0, 3, 5.0]"):
        assert _positions(client, experiment_id, {"data.frequencies": written}) == list(range(12)), written
    for other in ("[1,3]", "[1,3,5,7]", "[1,3,6]", '["1",3,5]', "1"):
        assert _positions(client, experiment_id, {"data.frequencies": other}) == [], other
    assert _positions(client, experiment_id, {"model.hidden": "[16.0,16]"}) == list(range(12))


def test_axis_values_are_stored_as_the_run_trains_with_them(client, tiny_spec):
    # YAML reads 1e-3 as the string "1e-3"; the run trains with 0.001, and is found by that number.
    body = {"base": tiny_spec, "axes": {"training.lr": ["1e-3", 0.0003], "noise.sigma": ["0.1", 0.2]}}
    experiment_id = client.post("/v1/experiments", json=body).json()["id"]
    runs = client.get(f"/v1/experiments/{experiment_id}/runs").json()["items"]
    assert [run["coords"] for run in runs] == [
        {"training.lr": 0.001, "noise.sigma": 0.1},
        {"training.lr": 0.001, "noise.sigma": 0.2},
        {"training.lr": 0.0003, "noise.sigma": 0.1},
        {"training.lr": 0.0003, "noise.sigma": 0.2},
    ]
    assert _positions(client, experiment_id, {"training.lr": "0.001"}) == [0, 1]
    assert _positions(client, experiment_id, {"filter": "noise.sigma<0.15"}) == [0, 2]
    assert _positions(client, experiment_id, {"sort": "-training.lr"}) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("params", "loc", "fragment"),
    [
        ({"noise.sigam": "0.1"}, "filter", "'sigam' is not a field of noise"),
        ({"filter": "summary.ece<low"}, "filter", "'low' is not a number"),
        ({"filter": "no operator"}, "filter", "expected PATH OP VALUE"),
        ({"sort": "summary.x;drop"}, "sort", "dotted field names"),
        ({"cursor": "bm9wZQ"}, "cursor", "invalid cursor"),
        ({"cursor": encode_cursor({"kind": "runs", "after": 2**70})}, "cursor", "invalid cursor"),
        (
            {"sort": "seed", "cursor": encode_cursor({"kind": "sorted_runs", "offset": 2**70})},
            "cursor",
            "invalid cursor",
        ),
        ({"limit": "0"}, "limit", "greater than or equal to 1"),
    ],
)
def test_bad_run_queries_name_the_parameter(client, finished, params, loc, fragment):
    experiment_id, _ = finished
    response = client.get(f"/v1/experiments/{experiment_id}/runs", params=params)
    assert response.status_code == 422
    detail = response.json()["error"]["details"][0]
    assert detail["loc"] == loc
    assert fragment in detail["msg"]


def test_sorting_by_a_result_pages_through_every_run(client, finished):
    experiment_id, runs = finished
    losses = {r.position: _results(r.position, r.coords)["test_loss"] for r in runs}
    expected = sorted(losses, key=lambda p: (-losses[p], p))
    seen, cursor = [], None
    while True:
        params = {"sort": "-summary.test_loss", "limit": 5, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/experiments/{experiment_id}/runs", params=params).json()
        seen += [run["position"] for run in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == expected


def test_sweep_order_pagination_and_status_filter(client, session, finished):
    experiment_id, runs = finished
    seen, cursor = [], None
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/experiments/{experiment_id}/runs", params=params).json()
        seen += [run["position"] for run in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(range(12))
    session.execute(update(Run).where(Run.id == runs[3].id).values(status=RunStatus.failed))
    assert _positions(client, experiment_id, {"status": "failed"}) == [3]


def test_get_run_and_404(client, finished):
    _, runs = finished
    body = client.get(f"/v1/runs/{runs[4].id}").json()
    assert body["coords"] == runs[4].coords
    assert body["summary"] == _results(4, runs[4].coords)
    assert body["spec_hash"] == runs[4].spec_hash
    assert body["status"] == "succeeded"
    assert client.get("/v1/runs/run_nope").status_code == 404


def test_the_polled_read_answers_what_the_listing_does(client, session, finished):
    """``GET /v1/runs/{id}`` reads a Core row, the listing ORM objects: the same JSON, to the byte."""
    experiment_id, runs = finished
    now = utcnow()
    session.execute(
        update(Run).where(Run.id == runs[5].id).values(started_at=now, heartbeat_at=now, finished_at=now)
    )
    listed = client.get(f"/v1/experiments/{experiment_id}/runs", params={"limit": 100}).json()["items"]
    for item in listed:
        response = client.get(f"/v1/runs/{item['id']}")
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert response.json() == item
    assert response.content == RunOut.model_validate(item).model_dump_json().encode()
    # Dispatched apart from FastAPI's routes, it is labelled and refuses other methods like them.
    labels = 'method="GET",route="/v1/runs/{run_id}",status="200"'
    assert f"gni_http_request_duration_seconds_count{{{labels}}}" in client.get("/metrics").text
    for method in ("HEAD", "POST", "DELETE"):
        assert client.request(method, f"/v1/runs/{runs[0].id}").status_code == 405


def test_aggregate_matches_a_direct_computation(client, finished):
    experiment_id, runs = finished
    response = client.get(
        f"/v1/experiments/{experiment_id}/aggregate",
        params={"group_by": "noise.sigma,training.mode", "metric": "summary.test_loss,summary.ece"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["groups"]) == 4
    assert [g["key"] for g in body["groups"]] == [
        {"noise.sigma": s, "training.mode": m} for s in (0.05, 0.1) for m in ("baseline", "gni")
    ]
    for group in body["groups"]:
        members = [r for r in runs if all(r.coords[k] == v for k, v in group["key"].items())]
        for metric in ("test_loss", "ece"):
            values = [_results(r.position, r.coords)[metric] for r in members]
            stats = group["metrics"][f"summary.{metric}"]
            assert stats["n"] == 3
            assert stats["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
            assert stats["std"] == pytest.approx(statistics.stdev(values), rel=1e-9)
            assert stats["stderr"] == pytest.approx(statistics.stdev(values) / math.sqrt(3), rel=1e-9)
    # A path named twice is one column.
    twice = {"group_by": "training.mode,training.mode", "metric": "summary.ece,summary.ece"}
    body = client.get(f"/v1/experiments/{experiment_id}/aggregate", params=twice).json()
    assert (body["group_by"], body["metrics"]) == (["training.mode"], ["summary.ece"])


def test_aggregate_by_a_non_axis_field_with_filters_and_statuses(client, session, finished):
    experiment_id, runs = finished
    session.execute(update(Run).where(Run.id == runs[0].id).values(status=RunStatus.failed))
    body = client.get(
        f"/v1/experiments/{experiment_id}/aggregate",
        params={"group_by": "model.activation", "metric": "summary.train_loss", "training.mode": "baseline"},
    ).json()
    assert [g["key"] for g in body["groups"]] == [{"model.activation": "relu"}]
    assert body["groups"][0]["metrics"]["summary.train_loss"]["n"] == 5  # six baseline runs, one failed
    all_statuses = client.get(
        f"/v1/experiments/{experiment_id}/aggregate",
        params={"metric": "summary.train_loss", "status": ["succeeded", "failed"]},
    ).json()
    assert all_statuses["groups"][0]["key"] == {}
    assert all_statuses["groups"][0]["metrics"]["summary.train_loss"]["n"] == 12


def test_aggregate_errors(client, finished):
    experiment_id, _ = finished
    missing = client.get(f"/v1/experiments/{experiment_id}/aggregate")
    assert missing.status_code == 422
    assert missing.json()["error"]["details"][0]["loc"] == "metric"
    bad = client.get(
        f"/v1/experiments/{experiment_id}/aggregate", params={"metric": "summary.x", "group_by": "nope"}
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["loc"] == "group_by"
    assert client.get("/v1/experiments/exp_x/aggregate", params={"metric": "summary.x"}).status_code == 404


def test_metrics_are_downsampled_keeping_the_last_point(client, session, finished):
    _, runs = finished
    run_id = runs[0].id
    rows = [("train_loss", step, 1.0 / (1 + step)) for step in range(0, 1000, 2)]
    rows += [("R_total", step, float("nan") if step == 40 else 0.1 * step) for step in range(0, 50, 10)]
    insert_metric_points(session, run_id, rows)
    body = client.get(f"/v1/runs/{run_id}/metrics", params={"max_points": 11}).json()
    assert body["names"] == ["R_total", "train_loss"]
    series = {s["name"]: s for s in body["series"]}
    assert series["R_total"]["steps"] == [0, 10, 20, 30, 40]
    assert series["R_total"]["values"][:4] == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert series["R_total"]["values"][4] is None  # NaN is stored as NULL, answered as null
    loss = series["train_loss"]
    assert 2 <= len(loss["steps"]) <= 11
    assert loss["steps"][0] == 0 and loss["steps"][-1] == 998
    assert loss["values"] == pytest.approx([1.0 / (1 + s) for s in loss["steps"]])
    window = client.get(
        f"/v1/runs/{run_id}/metrics", params={"names": "train_loss", "from": 100, "to": 110}
    ).json()
    assert [s["name"] for s in window["series"]] == ["train_loss"]
    assert window["series"][0]["steps"] == [100, 102, 104, 106, 108, 110]
    assert client.get(f"/v1/runs/{run_id}/metrics", params={"max_points": 1}).status_code == 422


def test_artifacts_are_listed_and_downloaded_with_their_type(client, session, store, finished, tmp_path):
    experiment_id, runs = finished
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    (tmp_path / "function.png").write_bytes(png)
    (tmp_path / "results.json").write_text('{"ok": true}')
    figure = store_artifact(
        session,
        store,
        tmp_path / "function.png",
        name="figures/function.png",
        experiment_id=experiment_id,
        run_id=runs[0].id,
    )
    store_artifact(
        session,
        store,
        tmp_path / "results.json",
        name="results.json",
        experiment_id=experiment_id,
        run_id=runs[0].id,
    )
    comparison = store_artifact(
        session,
        store,
        tmp_path / "function.png",
        name="spectral_dynamics.png",
        experiment_id=experiment_id,
        run_id=None,
    )
    session.flush()
    listed = client.get(f"/v1/runs/{runs[0].id}/artifacts").json()["items"]
    assert [(a["name"], a["kind"]) for a in listed] == [
        ("figures/function.png", "figure"),
        ("results.json", "results"),
    ]
    assert listed[0]["sha256"] == hashlib.sha256(png).hexdigest() and listed[0]["size"] == len(png)
    download = client.get(listed[0]["download_url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    assert download.content == png
    assert figure.key.startswith(f"experiments/{experiment_id}/runs/{runs[0].id}/art_")
    experiment_level = client.get(f"/v1/experiments/{experiment_id}/artifacts").json()["items"]
    assert [a["id"] for a in experiment_level] == [comparison.id]
    everything = client.get(
        f"/v1/experiments/{experiment_id}/artifacts", params={"include_runs": True}
    ).json()
    assert len(everything["items"]) == 3
    assert client.get(f"/v1/artifacts/{comparison.id}").json()["run_id"] is None
    assert client.get("/v1/artifacts/art_nope/content").status_code == 404


def test_an_experiments_artifacts_come_in_pages_its_own_first(client, session, store, finished, tmp_path):
    experiment_id, runs = finished
    (tmp_path / "f.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    stored = [
        store_artifact(
            session, store, tmp_path / "f.png", name=name, experiment_id=experiment_id, run_id=run_id
        )
        for run_id in (None, *(run.id for run in runs))
        for name in ("b.png", "a.png")
    ]
    session.flush()
    expected = sorted(stored, key=lambda a: (a.run_id or "", a.name, a.id))
    path = f"/v1/experiments/{experiment_id}/artifacts"
    seen, cursor, pages = [], None, 0
    while True:
        params = {"include_runs": True, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get(path, params=params).json()
        seen += [a["id"] for a in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [a.id for a in expected] and pages == -(-len(expected) // 3)
    assert [
        a["run_id"] for a in client.get(path, params={"include_runs": True, "limit": 2}).json()["items"]
    ] == [
        None,
        None,
    ]  # the comparison figures first
    whole = client.get(path, params={"include_runs": True}).json()  # default: GNI_MAX_PAGE_SIZE a page
    assert len(whole["items"]) == len(expected) and whole["next_cursor"] is None
    runs_cursor = client.get(f"/v1/experiments/{experiment_id}/runs", params={"limit": 1}).json()[
        "next_cursor"
    ]
    refused = client.get(path, params={"cursor": runs_cursor})
    assert refused.status_code == 422 and "cursor" in refused.text


def test_cancel_one_run(client, session, tiny_spec):
    experiment_id = client.post("/v1/experiments", json={"base": tiny_spec, "axes": {"seed": [0, 1]}}).json()[
        "id"
    ]
    runs = session.scalars(select(Run).where(Run.experiment_id == experiment_id).order_by(Run.position)).all()
    body = client.post(f"/v1/runs/{runs[0].id}/cancel").json()
    assert body["status"] == "cancelled"
    assert client.get(f"/v1/experiments/{experiment_id}").json()["counts"]["cancelled"] == 1
    session.execute(update(Run).where(Run.id == runs[1].id).values(status=RunStatus.failed))
    assert client.post(f"/v1/runs/{runs[1].id}/cancel").status_code == 409
    assert client.post(f"/v1/runs/{runs[0].id}/cancel").status_code == 200
