"""The SDK against the real app in-process: sync client over a threaded ASGI bridge, async client
over httpx's ASGITransport; runs train for real in the app's executor."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from gni_client import (
    AsyncClient,
    Client,
    ConflictError,
    Experiment,
    ExperimentPlan,
    NotFoundError,
    SpecValidationError,
    UnprocessableEntityError,
)
from gni_client.cli import build_parser, handle_submit


def test_sweep_end_to_end(client, tiny_spec, tmp_path):
    plan = client.experiments.create(
        spec=tiny_spec, sweep={"seed": [0, 1], "training.mode": ["baseline", "gni"]}, dry_run=True
    )
    assert isinstance(plan, ExperimentPlan) and plan.run_count == 4 and plan.batch_count >= 1

    created = client.experiments.create(
        spec=tiny_spec, sweep={"training.mode": ["baseline", "gni"], "seed": [0, 1]}, name="e2e"
    )
    assert isinstance(created, Experiment) and created.run_count == 4 and created.name == "e2e"
    done = client.experiments.wait(created.id, timeout=120, poll_interval=0.2, progress=False)
    assert done.status == "succeeded", done
    assert done.counts.succeeded == 4 and done.progress is not None and done.progress.fraction == 1.0

    runs = list(client.runs.list(created.id, limit=3))  # two pages, iterated as one
    assert [r.position for r in runs] == [0, 1, 2, 3]
    assert all(r.status == "succeeded" and "train_loss" in (r.summary or {}) for r in runs)
    gni_runs = client.runs.list(created.id, filter="training.mode=gni").to_list()
    assert {r.coords["training.mode"] for r in gni_runs} == {"gni"} and len(gni_runs) == 2
    frame = client.runs.list(created.id).to_pandas()
    assert list(frame["training.mode"]) == ["baseline", "baseline", "gni", "gni"]

    table = client.experiments.aggregate(created.id, group_by="training.mode", metric="summary.train_loss")
    assert [g.key["training.mode"] for g in table.groups] == ["baseline", "gni"]
    losses = {r.coords["training.mode"]: [] for r in runs}
    for r in runs:
        losses[r.coords["training.mode"]].append(r.summary["train_loss"])
    for group in table.groups:
        values = losses[group.key["training.mode"]]
        assert group.metrics["summary.train_loss"].n == 2
        assert group.metrics["summary.train_loss"].mean == pytest.approx(sum(values) / 2)
    assert list(table.to_pandas().columns) == ["training.mode", "mean", "std", "stderr", "n"]

    run = client.runs.get(runs[0].id)
    metrics = client.runs.metrics(run.id, max_points=50)
    assert metrics.names and metrics.series
    series = metrics[metrics.series[0].name]
    assert len(series.steps) == len(series.values) > 0
    assert set(metrics.to_pandas().columns) == {"name", "step", "value"}

    artifacts = client.artifacts.list(run_id=run.id)
    assert artifacts, "a run stores its files"
    path = client.artifacts.download(artifacts[0], to=tmp_path / "one")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == artifacts[0].sha256
    files = client.artifacts.download_all(created.id, to=tmp_path / "all", kind="results")
    assert len(files) >= 4 and all(p.stat().st_size > 0 for p in files)
    assert {p.relative_to(tmp_path / "all").parts[:2] for p in files} == {("runs", r.id) for r in runs}
    figures = client.artifacts.download_all(created.id, to=tmp_path / "figures", kind="figure")
    pngs = [p for p in figures if p.suffix == ".png"]
    assert pngs and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    # wait() returned once the experiment's own comparison figures were stored, not only the runs'.
    assert done.figures_state == "drawn"
    assert any(p.relative_to(tmp_path / "figures").parts[0] != "runs" for p in pngs)
    umask = os.umask(0o022)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~umask}  # as any new file, not 0600
    assert [e.id for e in client.experiments.list() if e.id == created.id] == [created.id]


def test_errors_map_to_the_exception_tree(client, tiny_spec):
    with pytest.raises(NotFoundError) as missing:
        client.experiments.get("exp_nope")
    assert missing.value.status_code == 404 and missing.value.type == "not_found"
    with pytest.raises(SpecValidationError) as local:  # caught before any request
        client.experiments.create(spec={**tiny_spec, "noise": {"sigma": -1.0}})
    assert local.value.errors == [
        {"loc": "base.noise.sigma", "msg": "sigma must be finite and >= 0, got -1.0"}
    ]
    with pytest.raises(UnprocessableEntityError) as remote:  # the same input, checked by the server
        client.experiments.create(spec={**tiny_spec, "noise": {"sigma": -1.0}}, validate=False)
    assert remote.value.errors == local.value.errors
    with pytest.raises(UnprocessableEntityError) as bad_filter:
        client.runs.list("exp_nope", filter="summary.ece<<1")
    assert bad_filter.value.errors[0]["loc"] == "filter"


def test_cancel_then_conflict(client, tiny_spec):
    slow = {**tiny_spec, "training": {"steps": 5000, "lr": 0.01}}
    created = client.experiments.create(spec=slow, sweep={"seed": [0, 1]})
    cancelled = client.experiments.cancel(created.id)
    assert cancelled.cancel_requested
    done = client.experiments.wait(created.id, timeout=60, poll_interval=0.2, progress=False)
    assert done.status == "cancelled"
    finished = client.experiments.create(spec=tiny_spec)
    client.experiments.wait(finished.id, timeout=60, poll_interval=0.2, progress=False)
    with pytest.raises(ConflictError):
        client.with_options(max_retries=0).experiments.cancel(finished.id)


@pytest.mark.anyio
async def test_async_client_end_to_end(async_client: AsyncClient, tiny_spec, tmp_path):
    async with async_client as sdk:
        created = await sdk.experiments.create(spec=tiny_spec, sweep={"seed": [0, 1, 2]}, validate=False)
        done = await sdk.experiments.wait(created.id, timeout=120, poll_interval=0.2, progress=False)
        assert done.status == "succeeded"
        page = await sdk.runs.list(created.id, limit=2)
        assert len(page.items) == 2 and page.has_next_page()
        assert [r.coords["seed"] async for r in sdk.runs.list(created.id, limit=2)] == [0, 1, 2]
        table = await sdk.experiments.aggregate(created.id, metric=["summary.train_loss", "summary.R_total"])
        assert table.groups[0].metrics["summary.train_loss"].n == 3
        assert "summary.train_loss.mean" in table.rows()[0]
        experiments = [e.id async for e in sdk.experiments.list()]
        assert created.id in experiments
        run = (await page.get_next_page()).items[0]
        files = await sdk.artifacts.list(run_id=run.id)
        path = await sdk.artifacts.download(files[0].id, to=f"{tmp_path / files[0].id}/")  # a new folder
        assert path.is_relative_to(tmp_path / files[0].id) and path.stat().st_size == files[0].size
        with pytest.raises(NotFoundError):
            await sdk.runs.get("run_nope")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_runs_without_their_figures_from_the_sdk_and_the_command_line(client, tiny_spec, tmp_path, capsys):
    created = client.experiments.create(spec=tiny_spec, run_figures=False)
    assert created.run_figures is False
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec))
    assert (
        handle_submit(build_parser().parse_args(["submit", str(spec), "--no-figures", "--json"]), client) == 0
    )
    submitted = client.experiments.get(json.loads(capsys.readouterr().out)["id"])
    assert submitted.run_figures is False
    for experiment in (created, submitted):
        done = client.experiments.wait(experiment.id, timeout=120, poll_interval=0.2, progress=False)
        assert done.status == "succeeded"
        [run] = client.runs.list(experiment.id)
        names = {artifact.name for artifact in client.artifacts.list(run_id=run.id)}
        assert "results.json" in names and not {name for name in names if name.startswith("figures/")}


def test_a_bare_axis_value_or_a_bad_base_url_is_named(client, tiny_spec):
    with pytest.raises(ValueError, match=r"axis 'noise.sigma': expected a list of values, got 0.1"):
        client.experiments.create(spec=tiny_spec, sweep={"noise.sigma": 0.1}, dry_run=True)
    with pytest.raises(ValueError, match=r"axis 'training.mode': expected a list of values, got 'gni'"):
        client.experiments.create(spec={"base": tiny_spec, "axes": {"training.mode": "gni"}}, dry_run=True)
    for url in ("localhost:8766", "ftp://host/", "http://"):
        with pytest.raises(ValueError, match="expected http://HOST:PORT"):
            Client(base_url=url)
