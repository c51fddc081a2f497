"""reuse_results: identical run specs take a finished result instead of training again.

Trained results come from the real batch path (``execute_batch``) on both databases; the API
tests build a finished source run by hand inside the rolled-back test transaction.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

import gni_engine
from gni_engine.provenance import engine_fingerprint
from gni_engine.spec import RunSpec
from gni_engine.sweep import SweepSpec
from gni_service.artifacts import delete_artifacts, store_artifact
from gni_service.db import Database
from gni_service.executor.batch import BatchContext, execute_batch
from gni_service.executor.checkpoints import checkpoint_key
from gni_service.executor.claims import claim_batch
from gni_service.executor.leases import LeaseReaper
from gni_service.experiments import create_experiment, get_experiment, refresh_experiment
from gni_service.models import Artifact, Experiment, FiguresState, MetricPoint, Run, RunStatus, utcnow
from gni_service.settings import ServiceSettings
from gni_service.storage import LocalArtifactStore


# ------------------------------------------------------------------------- the real batch path
@pytest.fixture
def context(fresh_url: str, tmp_path: Path):
    settings = ServiceSettings(data_folder=tmp_path / "data", database_url=fresh_url, figures_grace_s=0)
    database = Database(fresh_url)
    yield BatchContext(
        database, LocalArtifactStore(settings.resolved_artifact_dir), settings, threading.Event()
    )
    database.dispose()


def _create(context, spec, axes, *, owner="alice", reuse=True, run_figures=False) -> tuple[str, list[str]]:
    # No figures of each run unless a test asks: drawing costs seconds a run and reuse copies them anyway.
    sweep = SweepSpec(base=RunSpec.model_validate(spec), axes=axes)
    with context.database.transaction() as session:
        experiment, keys = create_experiment(
            session,
            sweep,
            name="reuse",
            max_runs=50,
            owner=owner,
            reuse_results=reuse,
            run_figures=run_figures,
        )
        return experiment.id, keys


def _train(context, keys) -> None:
    for key in keys:
        with context.database.transaction() as session:
            runs = claim_batch(session, key)
        execute_batch(context, runs)


def _runs(context, experiment_id) -> list[Run]:
    with context.database.reading() as session:
        return list(
            session.scalars(select(Run).where(Run.experiment_id == experiment_id).order_by(Run.position))
        )


def _series(context, run_id) -> list[tuple[str, int, float | None]]:
    with context.database.reading() as session:
        rows = session.execute(
            select(MetricPoint.name, MetricPoint.step, MetricPoint.value)
            .where(MetricPoint.run_id == run_id)
            .order_by(MetricPoint.id)
        )
        return [tuple(row) for row in rows]


def _artifacts(context, run_id) -> list[Artifact]:
    with context.database.reading() as session:
        return list(
            session.scalars(select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.name))
        )


def _experiment(context, experiment_id) -> Experiment:
    with context.database.reading() as session:
        return get_experiment(session, experiment_id)


def test_a_mixed_sweep_reuses_what_was_trained_and_trains_the_rest(context, tiny_spec):
    trained_id, keys = _create(context, tiny_spec, {"seed": [0, 1]}, reuse=False)
    _train(context, keys)
    trained = _runs(context, trained_id)
    assert [run.status for run in trained] == [RunStatus.succeeded] * 2

    mixed_id, keys = _create(context, tiny_spec, {"seed": [1, 2, 0]})
    reused_1, fresh, reused_0 = _runs(context, mixed_id)
    assert (reused_0.reused_from, reused_1.reused_from, fresh.reused_from) == (
        trained[0].id,
        trained[1].id,
        None,
    )
    assert [r.status for r in (reused_1, fresh, reused_0)] == [
        RunStatus.succeeded,
        RunStatus.queued,
        RunStatus.succeeded,
    ]
    assert keys == [fresh.batch_key]  # only what must train is announced
    record = _experiment(context, mixed_id)
    assert (record.status, record.n_succeeded, record.n_queued, record.n_running) == (
        RunStatus.running,
        2,
        1,
        0,
    )

    for source, copy in ((trained[0], reused_0), (trained[1], reused_1)):
        assert copy.summary == source.summary and copy.device == source.device
        assert (
            copy.attempt == 0 and copy.progress_step == copy.progress_total == tiny_spec["training"]["steps"]
        )
        series = _series(context, copy.id)
        assert series and series == _series(context, source.id)
        originals, copies = _artifacts(context, source.id), _artifacts(context, copy.id)
        assert [(a.name, a.key, a.size, a.sha256) for a in copies] == [
            (a.name, a.key, a.size, a.sha256) for a in originals
        ]
        assert {a.experiment_id for a in copies} == {mixed_id} and not {a.id for a in copies} & {
            a.id for a in originals
        }
        for artifact in copies:  # downloadable: the store serves the bytes the record describes
            download = context.store.download(artifact.key, filename=artifact.name, content_type="x")
            assert download.path is not None
            assert hashlib.sha256(download.path.read_bytes()).hexdigest() == artifact.sha256

    _train(context, keys)
    runs = _runs(context, mixed_id)
    assert [run.status for run in runs] == [RunStatus.succeeded] * 3
    assert runs[1].reused_from is None and runs[1].attempt == 1
    record = _experiment(context, mixed_id)
    assert (record.status, record.n_succeeded, record.n_queued) == (RunStatus.succeeded, 3, 0)
    assert record.figures_state == FiguresState.drawn  # drawn from reused and trained runs alike


def test_runs_trained_without_figures_stand_in_only_where_none_are_wanted(context, tiny_spec):
    bare_id, keys = _create(context, tiny_spec, {"seed": [0]}, reuse=False)
    _train(context, keys)
    [bare] = _runs(context, bare_id)
    names = [a.name for a in _artifacts(context, bare.id)]
    assert bare.status == RunStatus.succeeded and {"results.json", "model.safetensors"} <= set(names)
    assert not [name for name in names if name.startswith("figures/")]
    record = _experiment(context, bare_id)
    assert record.run_figures is False and record.figures_state == FiguresState.drawn  # comparisons drawn

    [wants] = _runs(context, _create(context, tiny_spec, {"seed": [0]}, run_figures=True)[0])
    assert (wants.reused_from, wants.status) == (None, RunStatus.queued)
    [takes] = _runs(context, _create(context, tiny_spec, {"seed": [0]})[0])
    assert (takes.reused_from, takes.status) == (bare.id, RunStatus.succeeded)


def test_a_fully_reused_experiment_finishes_at_once_and_the_reaper_draws_its_figures(context, tiny_spec):
    trained_id, keys = _create(context, tiny_spec, {"seed": [0]}, reuse=False)
    _train(context, keys)
    reused_id, keys = _create(context, tiny_spec, {"seed": [0]})
    assert keys == []
    record = _experiment(context, reused_id)
    assert (record.status, record.n_succeeded, record.n_queued) == (RunStatus.succeeded, 1, 0)
    assert record.finished_at is not None and record.figures_state == FiguresState.pending

    reaper = LeaseReaper(context.database, context.settings, lambda keys: None, store=context.store)
    assert reaper.redraw_figures() == [reused_id]
    record = _experiment(context, reused_id)
    assert record.figures_state == FiguresState.drawn and record.figures_attempts == 1
    with context.database.reading() as session:
        figures = session.scalars(
            select(Artifact.name).where(Artifact.experiment_id == reused_id, Artifact.run_id.is_(None))
        ).all()
    assert figures and all(name.startswith("figures/") for name in figures)
    assert reaper.redraw_figures() == []  # drawn once


def _finished_by_hand(context, spec, tmp_path, *, version=gni_engine.__version__) -> Run:
    experiment_id, _ = _create(context, spec, {"seed": [0]}, reuse=False)
    with context.database.transaction() as session:
        return _finished_source(session, context.store, tmp_path, experiment_id, version)


def test_no_reuse_without_the_flag_across_owners_or_across_engine_versions(context, tiny_spec, tmp_path):
    _finished_by_hand(context, tiny_spec, tmp_path)
    for owner, reuse in (("alice", False), ("bob", True), (None, True)):
        experiment_id, keys = _create(context, tiny_spec, {"seed": [0]}, owner=owner, reuse=reuse)
        [run] = _runs(context, experiment_id)
        assert (run.status, run.reused_from, len(keys)) == (RunStatus.queued, None, 1), (owner, reuse)
        assert _series(context, run.id) == [] and _artifacts(context, run.id) == []
    experiment_id, _ = _create(context, tiny_spec, {"seed": [0]})  # the control: alice, reuse
    [run] = _runs(context, experiment_id)
    assert run.status == RunStatus.succeeded and run.reused_from is not None

    with context.database.transaction() as session:
        session.execute(update(Run).values(status=RunStatus.queued, summary=None))
    source = _finished_by_hand(context, tiny_spec, tmp_path / "old", version="0.0.1")
    experiment_id, keys = _create(context, tiny_spec, {"seed": [0]})
    [run] = _runs(context, experiment_id)
    assert (run.status, run.reused_from, len(keys)) == (RunStatus.queued, None, 1)
    assert source.spec_hash == run.spec_hash


def test_deleting_artifacts_keeps_objects_another_record_still_names(context, tiny_spec, tmp_path):
    source = _finished_by_hand(context, tiny_spec, tmp_path)
    reused_id, _ = _create(context, tiny_spec, {"seed": [0]})
    [copy] = _runs(context, reused_id)
    originals, copies = _artifacts(context, source.id), _artifacts(context, copy.id)
    assert len(copies) == 1 and [a.key for a in copies] == [a.key for a in originals]
    store = context.store

    assert delete_artifacts(context.database, store, [a.id for a in originals]) == []
    assert _artifacts(context, source.id) == []
    assert all((store.root / a.key).is_file() for a in copies)  # the reused run's file stays

    deleted = delete_artifacts(context.database, store, [a.id for a in copies])
    assert deleted == sorted(a.key for a in copies)
    assert not any((store.root / a.key).exists() for a in copies)


# ------------------------------------------------------------------------------------ the API
def _finished_source(
    session, store, tmp_path, experiment_id: str, version: str, fingerprint: str = engine_fingerprint()
) -> Run:
    """Make the experiment's one run succeeded by hand: summary, three metric points, one artifact."""
    run = session.scalars(select(Run).where(Run.experiment_id == experiment_id)).one()
    run.status = RunStatus.succeeded
    run.summary = {"train_loss": 0.25, "engine_version": version, "engine_fingerprint": fingerprint}
    run.device = "cpu"
    run.progress_step = run.progress_total
    run.started_at = run.finished_at = utcnow()
    session.add_all(
        MetricPoint(run_id=run.id, name="train_loss", step=s, value=1.0 / (s + 1)) for s in (0, 10, 20)
    )
    tmp_path.mkdir(parents=True, exist_ok=True)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights of " + run.id.encode())
    store_artifact(
        session, store, weights, name="model.safetensors", experiment_id=experiment_id, run_id=run.id
    )
    session.flush()
    refresh_experiment(session, experiment_id)
    session.flush()
    return run


def test_the_api_reuses_on_request_and_shows_where_a_result_came_from(
    client, session, store, executor, tiny_spec, tmp_path
):
    body = {"base": tiny_spec, "axes": {"seed": [0]}}
    first = client.post("/v1/experiments", json=body).json()
    source = _finished_source(session, store, tmp_path, first["id"], gni_engine.__version__)
    executor.enqueued.clear()

    headers = {"Idempotency-Key": "reuse-1"}
    created = client.post("/v1/experiments", json={**body, "reuse_results": True}, headers=headers)
    assert created.status_code == 202, created.text
    experiment = created.json()
    assert experiment["status"] == "succeeded" and experiment["counts"]["succeeded"] == 1
    assert experiment["figures_state"] == "pending" and experiment["figures_error"] is None
    assert executor.enqueued == []
    again = client.post("/v1/experiments", json={**body, "reuse_results": True}, headers=headers)
    assert again.json() == experiment and again.headers["Idempotent-Replayed"] == "true"
    assert client.post("/v1/experiments", json=body, headers=headers).status_code == 409

    [run] = client.get(f"/v1/experiments/{experiment['id']}/runs").json()["items"]
    assert run["reused_from"] == source.id and run["status"] == "succeeded"
    assert run["summary"] == source.summary
    assert client.get(f"/v1/runs/{run['id']}").json()["reused_from"] == source.id
    series = client.get(f"/v1/runs/{run['id']}/metrics").json()["series"]
    assert series == [{"name": "train_loss", "steps": [0, 10, 20], "values": [1.0, 1 / 11, 1 / 21]}]
    [artifact] = client.get(f"/v1/runs/{run['id']}/artifacts").json()["items"]
    content = client.get(artifact["download_url"])
    assert content.status_code == 200 and content.content == b"weights of " + source.id.encode()

    plain = client.post("/v1/experiments", json=body).json()  # reuse_results defaults to false
    [queued] = client.get(f"/v1/experiments/{plain['id']}/runs").json()["items"]
    assert (queued["status"], queued["reused_from"]) == ("queued", None)


def test_the_api_does_not_reuse_another_engine_versions_result(client, session, store, tiny_spec, tmp_path):
    body = {"base": tiny_spec}
    first = client.post("/v1/experiments", json=body).json()
    _finished_source(session, store, tmp_path, first["id"], "0.0.1")
    experiment = client.post("/v1/experiments", json={**body, "reuse_results": True}).json()
    assert experiment["status"] == "queued" and experiment["counts"]["queued"] == 1


def test_the_api_does_not_reuse_a_result_of_other_code_under_the_same_version(
    client, session, store, tiny_spec, tmp_path
):
    body = {"base": tiny_spec}
    first = client.post("/v1/experiments", json=body).json()
    edited = "0" * 16  # the engine's source edited without a new version number
    _finished_source(session, store, tmp_path, first["id"], gni_engine.__version__, edited)
    experiment = client.post("/v1/experiments", json={**body, "reuse_results": True}).json()
    assert experiment["status"] == "queued" and experiment["counts"]["queued"] == 1


def test_openapi_documents_reuse(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["ExperimentCreate"]["properties"]["reuse_results"]["default"] is False
    assert "reused_from" in schemas["RunOut"]["required"]
    assert schemas["ExperimentOut"]["properties"]["figures_state"]["enum"] == [
        "pending",
        "drawing",
        "drawn",
        "failed",
    ]


def test_deleting_an_experiment_keeps_the_objects_a_reused_run_still_names(
    client, session, store, executor, tiny_spec, tmp_path
):
    body = {"base": tiny_spec, "axes": {"seed": [0]}}
    first = client.post("/v1/experiments", json=body).json()
    refused = client.delete(f"/v1/experiments/{first['id']}")  # queued: a worker may be about to write
    assert refused.status_code == 409 and "cancel it" in refused.json()["error"]["message"]
    source = _finished_source(session, store, tmp_path, first["id"], gni_engine.__version__)
    (tmp_path / "comparison.png").write_bytes(b"\x89PNG\r\n\x1a\n only the source's")
    own = store_artifact(
        session,
        store,
        tmp_path / "comparison.png",
        name="loss_curves.png",
        experiment_id=first["id"],
        run_id=None,
    )
    session.flush()
    reused = client.post("/v1/experiments", json={**body, "reuse_results": True}).json()
    [copy] = client.get(f"/v1/experiments/{reused['id']}/runs").json()["items"]
    assert copy["reused_from"] == source.id

    session.execute(update(Experiment).where(Experiment.id == first["id"]).values(figures_state="drawing"))
    session.flush()
    drawing = client.delete(f"/v1/experiments/{first['id']}")
    assert drawing.status_code == 409 and "being drawn" in drawing.json()["error"]["message"]
    session.execute(update(Experiment).where(Experiment.id == first["id"]).values(figures_state="drawn"))
    session.flush()

    written = store.put_file(
        checkpoint_key(source.id), tmp_path / "comparison.png", "application/octet-stream"
    )
    deleted = client.delete(f"/v1/experiments/{first['id']}")
    assert deleted.status_code == 200, deleted.text
    # the figure only the source named, and the run's two checkpoint slots (one of them written)
    counts = {"runs": 1, "artifacts": 2, "objects_to_delete": 3}
    assert deleted.json() == {"id": first["id"], "deleted": True, **counts}
    deadline = time.monotonic() + 10  # objects go in the background, after the answer
    while (store.root / own.key).exists() or (store.root / written.key).exists():
        assert time.monotonic() < deadline, "the objects were not deleted"
        time.sleep(0.02)
    assert client.get(f"/v1/experiments/{first['id']}").status_code == 404
    assert client.get(f"/v1/runs/{source.id}").status_code == 404
    assert session.scalar(select(func.count()).where(MetricPoint.run_id == source.id)) == 0
    [shared] = client.get(f"/v1/runs/{copy['id']}/artifacts").json()["items"]  # the reused copy's
    assert client.get(shared["download_url"]).content == b"weights of " + source.id.encode()
    assert client.get(f"/v1/runs/{copy['id']}/metrics").json()["series"][0]["steps"] == [0, 10, 20]
    assert client.delete(f"/v1/experiments/{first['id']}").status_code == 404
