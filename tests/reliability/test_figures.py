"""Experiment figures survive their drawer: claimed once, redrawn by the reaper, bugs not retried.

A finished experiment is made by hand (succeeded runs with a loss series, finished five minutes
ago); the process that should have drawn its figures "dies" by claiming and never settling. Most
tests run on SQLite; the race between two reapers also runs on a private PostgreSQL.
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from gni_service.context import build_executor
from gni_service.db import Database
from gni_service.executor.experiment_figures import _store as store_drawn_figures
from gni_service.executor.experiment_figures import claim_figures, store_experiment_figures
from gni_service.executor.leases import LeaseReaper
from gni_service.executor.time_limit import SoftTimeLimitExceeded
from gni_service.experiments import refresh_experiment
from gni_service.migrate import upgrade_database
from gni_service.models import Artifact, Experiment, FiguresState, MetricPoint, Run, RunStatus, utcnow
from gni_service.settings import ServiceSettings
from gni_service.storage import LocalArtifactStore, StorageError, StoredObject

from .scenario import experiment, submit, with_steps

LOSSES = ((0, 1.0), (10, 0.5), (20, 0.25))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'figures.sqlite3'}"
    upgrade_database(url)
    return url


def _settings(tmp_path: Path, url: str, **values) -> ServiceSettings:
    return ServiceSettings(data_folder=tmp_path / "data", database_url=url, **values)


def local_store(settings: ServiceSettings) -> LocalArtifactStore:
    return LocalArtifactStore(settings.resolved_artifact_dir)


def finished_experiment(database: Database, *, ago: timedelta = timedelta(minutes=5)) -> str:
    """An experiment whose two runs succeeded ``ago``, with a train-loss series and no figures."""
    experiment_id, _ = submit(database, with_steps(20), {"seed": [0, 1]})
    finished = utcnow() - ago
    with database.transaction() as session:
        for run in session.scalars(select(Run).where(Run.experiment_id == experiment_id)):
            run.status = RunStatus.succeeded
            run.summary = {"train_loss": 0.25}
            run.progress_step = run.progress_total
            run.started_at = run.finished_at = finished
            session.add_all(
                MetricPoint(run_id=run.id, name="train_loss", step=step, value=value)
                for step, value in LOSSES
            )
        session.flush()
        refresh_experiment(session, experiment_id)
    return experiment_id


def die_while_drawing(
    database: Database, settings: ServiceSettings, experiment_id: str, *, ago: float
) -> None:
    """A process claims the figures ``ago`` seconds back and is killed before it settles them."""
    with database.transaction() as session:
        assert claim_figures(session, experiment_id, settings, now=utcnow() - timedelta(seconds=ago))


def figure_records(database: Database, experiment_id: str) -> list[Artifact]:
    with database.reading() as session:
        statement = select(Artifact).where(Artifact.experiment_id == experiment_id, Artifact.run_id.is_(None))
        return list(session.scalars(statement.order_by(Artifact.name)))


def reaper_of(database: Database, settings: ServiceSettings, store: LocalArtifactStore) -> LeaseReaper:
    return LeaseReaper(database, settings, lambda keys: None, store=store)


class FakeDrawing:
    """Stands in for the engine's comparison figures: counts calls, takes ``seconds``, may raise."""

    def __init__(self, seconds: float = 0.0, error: Exception | None = None) -> None:
        self.seconds = seconds
        self.error = error
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, runs, out_dir: Path) -> dict[str, Path]:
        with self._lock:
            self.calls += 1
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        path = out_dir / "loss_curves.png"
        path.write_bytes(f"{len(runs)} runs".encode())
        return {"loss_curves.png": path}


@pytest.fixture
def fake_drawing(monkeypatch: pytest.MonkeyPatch):
    def install(**kwargs) -> FakeDrawing:
        drawing = FakeDrawing(**kwargs)
        monkeypatch.setattr("gni_engine.figures.comparison_figures", drawing)
        return drawing

    return install


def test_the_reaper_draws_figures_a_killed_drawer_left_and_leaves_fresh_ones_to_the_worker(
    sqlite_url, tmp_path
):
    settings = _settings(tmp_path, sqlite_url, figures_lease_s=60, figures_grace_s=30)
    database, store = Database(sqlite_url), local_store(settings)
    interrupted = finished_experiment(database)
    die_while_drawing(database, settings, interrupted, ago=1)
    never_claimed = finished_experiment(database)  # its worker died before it could claim
    just_finished = finished_experiment(database, ago=timedelta(seconds=1))
    reaper = reaper_of(database, settings, store)

    assert reaper.redraw_figures() == [never_claimed]  # the interrupted claim is still live
    assert experiment(database, interrupted).figures_state == FiguresState.drawing
    with database.transaction() as session:  # a whole lease later
        past = utcnow() - timedelta(seconds=61)
        session.execute(
            update(Experiment).where(Experiment.id == interrupted).values(figures_claimed_at=past)
        )
    assert reaper.redraw_figures() == [interrupted]

    for experiment_id, attempts in ((interrupted, 2), (never_claimed, 1)):
        record = experiment(database, experiment_id)
        assert (record.figures_state, record.figures_attempts, record.figures_error) == (
            "drawn",
            attempts,
            None,
        )
        figures = figure_records(database, experiment_id)
        assert "figures/loss_curves.png" in [a.name for a in figures]
        for artifact in figures:  # stored and verified: the bytes are those recorded
            data = (store.root / artifact.key).read_bytes()
            assert hashlib.sha256(data).hexdigest() == artifact.sha256
    assert experiment(database, just_finished).figures_state == FiguresState.pending  # within the grace
    assert figure_records(database, just_finished) == []
    assert reaper.redraw_figures() == []
    database.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    return sqlite_url if request.param == "sqlite" else str(request.getfixturevalue("database_url"))


def test_two_reapers_draw_an_experiment_once_and_a_late_drawer_stores_nothing(
    any_url, tmp_path, fake_drawing
):
    drawing = fake_drawing(seconds=0.5)
    settings = _settings(tmp_path, any_url, figures_lease_s=60)
    store = local_store(settings)
    databases = [Database(any_url), Database(any_url)]  # two API processes
    experiment_id = finished_experiment(databases[0])
    reapers = [reaper_of(database, settings, store) for database in databases]
    start = threading.Barrier(2)
    drawn: list[list[str]] = []

    def reap(reaper: LeaseReaper) -> None:
        start.wait()
        drawn.append(reaper.redraw_figures())

    threads = [threading.Thread(target=reap, args=(reaper,)) for reaper in reapers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(drawn) == [[], [experiment_id]] and drawing.calls == 1
    assert [a.name for a in figure_records(databases[0], experiment_id)] == ["figures/loss_curves.png"]
    record = experiment(databases[0], experiment_id)
    assert (record.figures_state, record.figures_attempts) == (FiguresState.drawn, 1)

    # A drawer whose claim expired and was taken over finds out when it comes to store.
    other = finished_experiment(databases[0])
    with databases[0].transaction() as session:
        late = claim_figures(session, other, settings, now=utcnow() - timedelta(seconds=61))
    assert late is not None and reapers[1].redraw_figures() == [other]
    files = {"loss_curves.png": tmp_path / "late.png"}
    files["loss_curves.png"].write_bytes(b"late")
    assert store_drawn_figures(databases[0], store, settings, late, files) == []
    assert [a.name for a in figure_records(databases[0], other)] == ["figures/loss_curves.png"]
    assert experiment(databases[0], other).figures_attempts == 2
    for database in databases:
        database.dispose()


def test_a_drawing_bug_is_recorded_and_not_retried(sqlite_url, tmp_path, fake_drawing):
    drawing = fake_drawing(error=ValueError("no colour for arm 'gni'"))
    settings = _settings(tmp_path, sqlite_url)
    database = Database(sqlite_url)
    experiment_id = finished_experiment(database)
    reaper = reaper_of(database, settings, local_store(settings))
    for _ in range(3):
        assert reaper.redraw_figures() == []
    record = experiment(database, experiment_id)
    assert (record.figures_state, record.figures_attempts) == (FiguresState.failed, 1)
    assert record.figures_error == "ValueError: no colour for arm 'gni'"
    assert drawing.calls == 1 and figure_records(database, experiment_id) == []
    # The worker that finishes an experiment goes through the same claim: no second try there either.
    assert store_experiment_figures(database, local_store(settings), settings, experiment_id) == []
    assert drawing.calls == 1
    database.dispose()


def test_a_time_limit_while_drawing_gives_the_claim_back(sqlite_url, tmp_path, fake_drawing):
    # Celery's soft time limit interrupts the drawer: not a drawing bug, the reaper draws them later.
    drawing = fake_drawing(error=SoftTimeLimitExceeded())
    settings = _settings(tmp_path, sqlite_url)
    database = Database(sqlite_url)
    experiment_id = finished_experiment(database)
    store = local_store(settings)
    assert store_experiment_figures(database, store, settings, experiment_id) == []
    record = experiment(database, experiment_id)
    assert (record.figures_state, record.figures_error) == (
        FiguresState.pending,
        "interrupted by the task's time limit",
    )
    drawing.error = None
    assert reaper_of(database, settings, store).redraw_figures() == [experiment_id]
    assert experiment(database, experiment_id).figures_state == FiguresState.drawn
    database.dispose()


class UnreachableStore(LocalArtifactStore):
    """Refuses the first ``failures`` uploads of experiment figures."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def put_file(self, key: str, source: Path, content_type: str) -> StoredObject:
        if "/experiment/" in key and self.failures > 0:
            self.failures -= 1
            raise StorageError("the store is unreachable")
        return super().put_file(key, source, content_type)


def test_an_unreachable_store_gives_the_claim_back_until_the_attempts_run_out(
    sqlite_url, tmp_path, fake_drawing
):
    drawing = fake_drawing()
    settings = _settings(tmp_path, sqlite_url, figures_max_attempts=2)
    database = Database(sqlite_url)
    recovers = finished_experiment(database)
    reaper = reaper_of(database, settings, UnreachableStore(settings.resolved_artifact_dir, failures=1))
    assert reaper.redraw_figures() == []
    record = experiment(database, recovers)
    assert (record.figures_state, record.figures_attempts) == (FiguresState.pending, 1)
    assert record.figures_error is not None and "the store is unreachable" in record.figures_error
    assert reaper.redraw_figures() == [recovers]
    record = experiment(database, recovers)
    assert (record.figures_state, record.figures_attempts, record.figures_error) == ("drawn", 2, None)

    stays_down = finished_experiment(database)
    reaper = reaper_of(database, settings, UnreachableStore(settings.resolved_artifact_dir, failures=10))
    for _ in range(3):
        assert reaper.redraw_figures() == []
    record = experiment(database, stays_down)
    assert (record.figures_state, record.figures_attempts) == (FiguresState.failed, 2)
    assert record.figures_error is not None and "attempt 2" in record.figures_error
    assert drawing.calls == 4
    database.dispose()


def test_figures_whose_drawer_died_at_every_attempt_are_given_up(sqlite_url, tmp_path, fake_drawing):
    drawing = fake_drawing()
    settings = _settings(tmp_path, sqlite_url, figures_max_attempts=2, figures_lease_s=60)
    database = Database(sqlite_url)
    experiment_id = finished_experiment(database)
    die_while_drawing(database, settings, experiment_id, ago=600)
    die_while_drawing(database, settings, experiment_id, ago=120)
    assert reaper_of(database, settings, local_store(settings)).redraw_figures() == []
    record = experiment(database, experiment_id)
    assert (record.figures_state, record.figures_attempts) == (FiguresState.failed, 2)
    assert record.figures_error is not None and record.figures_error.startswith("gave up after 2 attempts")
    assert drawing.calls == 0
    database.dispose()


@pytest.mark.parametrize("executor", ["inprocess", "celery"])
def test_both_executors_run_the_figures_reaper(executor, sqlite_url, tmp_path, fake_drawing):
    drawing = fake_drawing()
    settings = _settings(
        tmp_path,
        sqlite_url,
        executor=executor,
        broker_url="memory://",  # the Celery executor sends nothing here: no batch is queued
        reaper_interval_s=0.1,
        figures_grace_s=0,
    )
    database = Database(sqlite_url)
    experiment_id = finished_experiment(database, ago=timedelta(0))
    running = build_executor(settings, database, local_store(settings))
    running.start()
    try:
        deadline = time.monotonic() + 20
        while experiment(database, experiment_id).figures_state != FiguresState.drawn:
            assert time.monotonic() < deadline, "the reaper drew no figures"
            time.sleep(0.05)
    finally:
        running.stop(timeout=10)
    assert drawing.calls == 1
    database.dispose()
