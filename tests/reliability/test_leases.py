"""The lease reaper's schedule, on SQLite with a fake clock: no server, no waiting."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from gni_service.db import Database
from gni_service.executor.claims import claim_batch
from gni_service.executor.leases import LeaseReaper
from gni_service.migrate import upgrade_database
from gni_service.models import Run, RunStatus, utcnow
from gni_service.settings import ServiceSettings

from .scenario import runs_of, submit, with_steps


def test_the_reaper_judges_leases_only_after_a_whole_lease_of_database_and_reannounces(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'leases.sqlite3'}"
    upgrade_database(url)
    settings = ServiceSettings(
        data_folder=tmp_path, database_url=url, lease_timeout_s=10, requeue_queued_after_s=30
    )
    database = Database(url)
    running_id, [running_key] = submit(database, with_steps(10))
    _, [waiting_key] = submit(database, with_steps(11))
    long_ago = utcnow() - timedelta(hours=1)
    with database.transaction() as session:
        claim_batch(session, running_key)
        session.execute(update(Run).where(Run.batch_key == running_key).values(heartbeat_at=long_ago))

    announced: list[list[str]] = []
    resets = [True]  # the first question finds the broker without its marker
    now = [0.0]
    reaper = LeaseReaper(
        database,
        settings,
        lambda keys: announced.append(list(keys)),
        broker_was_reset=lambda: resets.pop() if resets else False,
        clock=lambda: now[0],
    )

    first = reaper.run_once()  # just reached the database: no lease is judged yet
    assert first.requeued == []
    assert announced == [[waiting_key]]  # the broker lost its messages: every queued batch again
    assert [run.status for run in runs_of(database, running_id)] == [RunStatus.running]

    now[0] = 10.0
    second = reaper.run_once()
    assert len(second.requeued) == 1 and second.batch_keys == {running_key}
    assert announced[-1] == [running_key]
    [run] = runs_of(database, running_id)
    assert run.status == RunStatus.queued and run.error and "stopped heartbeating" in run.error

    # A batch waiting unclaimed for longer than requeue_queued_after_s is announced again, but
    # not more than once per that interval.
    with database.transaction() as session:
        session.execute(update(Run).where(Run.batch_key == waiting_key).values(queued_at=long_ago))
    now[0] = 11.0
    reaper.run_once()
    assert waiting_key not in _flatten(announced[2:])  # announced at 0 s: too recent
    now[0] = 31.0
    reaper.run_once()
    assert waiting_key in _flatten(announced[2:])
    # Still waiting: announced again after 60 s, then 120 s, … (at most 2**4 × 30 s apart), not
    # every 30 s: a backlog of hours gets a few copies of its message.
    times = []
    for second in range(41, 3031, 10):
        now[0] = float(second)
        before = len(_flatten(announced))
        reaper.run_once()
        if waiting_key in _flatten(announced)[before:]:
            times.append(second)
    assert times[:4] == [91, 211, 451, 931]
    assert all(b - a == 16 * 30 for a, b in zip(times[4:], times[5:], strict=False))
    database.dispose()


def test_the_reapers_log_names_the_runs_it_requeued(tmp_path: Path, caplog):
    url = f"sqlite:///{tmp_path / 'ids.sqlite3'}"
    upgrade_database(url)
    settings = ServiceSettings(data_folder=tmp_path, database_url=url, lease_timeout_s=10)
    database = Database(url)
    experiment_id, [key] = submit(database, with_steps(10))
    with database.transaction() as session:
        claim_batch(session, key)
        session.execute(
            update(Run).where(Run.batch_key == key).values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
    now = [0.0]
    reaper = LeaseReaper(
        database, settings, lambda keys: None, broker_was_reset=lambda: False, clock=lambda: now[0]
    )
    reaper.run_once()
    now[0] = 10.0
    with caplog.at_level("WARNING", logger="gni_service.executor.leases"):
        reaper.run_once()
    [record] = [r for r in caplog.records if r.getMessage().startswith("expired leases")]
    assert all(run.id in record.getMessage() for run in runs_of(database, experiment_id))
    assert record.run_ids == [run.id for run in runs_of(database, experiment_id)]
    database.dispose()


def _flatten(lists: Sequence[Sequence[str]]) -> list[str]:
    return [item for keys in lists for item in keys]


def test_the_reaper_deletes_idempotency_answers_past_their_ttl_every_few_minutes(tmp_path: Path):
    from sqlalchemy import func, select

    from gni_service.executor.leases import PRUNE_INTERVAL_S
    from gni_service.models import IdempotencyRecord

    url = f"sqlite:///{tmp_path / 'prune.sqlite3'}"
    upgrade_database(url)
    settings = ServiceSettings(data_folder=tmp_path, database_url=url, idempotency_ttl_s=3600)
    database = Database(url)

    def answer(key: str, age: timedelta) -> IdempotencyRecord:
        return IdempotencyRecord(
            owner="alice",
            key=key,
            request_hash="0" * 64,
            status_code=202,
            response_body={"id": key},
            created_at=utcnow() - age,
        )

    with database.transaction() as session:
        session.add_all([answer("old", timedelta(hours=2)), answer("new", timedelta(minutes=5))])
    now = [0.0]
    reaper = LeaseReaper(database, settings, lambda keys: None, clock=lambda: now[0])

    def keys() -> list[str]:
        with database.reading() as session:
            return sorted(session.scalars(select(IdempotencyRecord.key)))

    reaper.run_once()
    assert keys() == ["new"]
    with database.transaction() as session:
        session.add(answer("later", timedelta(hours=3)))
    now[0] = PRUNE_INTERVAL_S / 2
    reaper.run_once()  # not yet: one DELETE every PRUNE_INTERVAL_S, not every pass
    assert keys() == ["later", "new"]
    now[0] = PRUNE_INTERVAL_S
    reaper.run_once()
    assert keys() == ["new"]
    with database.reading() as session:
        assert session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 1
    database.dispose()
