"""Faults injected on loopback, and what must come out: no run lost, none run twice, results exact.

Each test builds the distributed stack from private servers (see ``conftest.py``): a PostgreSQL and
a Redis of its own, Celery workers as subprocesses, and the API's side — the Celery executor with
its lease reaper — in the test process. Leases are short here (heartbeat 1 s, lease 4 s).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from gni_service.db import Database
from gni_service.executor.celery_executor import CeleryExecutor
from gni_service.executor.checkpoints import checkpoint_key
from gni_service.executor.claims import claim_batch
from gni_service.executor.leases import expire_leases
from gni_service.models import RunStatus, utcnow
from gni_service.settings import ServiceSettings

from .conftest import stack_environment, wait_until
from .scenario import (
    LONG_SPEC,
    SEEDS,
    assert_equals_reference,
    check_cancellation,
    experiment,
    reference,
    runs_of,
    stored_run,
    submit,
    wait_progress,
    wait_runs,
    with_steps,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def stack(database_url, private_redis, workers, tmp_path: Path):
    """(environment, settings, database, executor, workers) of one private stack."""
    env = stack_environment(database_url, private_redis.url, tmp_path / "data")
    settings = ServiceSettings.from_env(env)
    database = Database(settings.resolved_database_url, pool_size=2)
    executor = CeleryExecutor(database, settings)
    executor.start()
    try:
        yield env, settings, database, executor, workers(env)
    finally:
        executor.stop(5.0)
        database.dispose()


def test_a_killed_worker_loses_its_lease_and_the_run_resumes_bit_for_bit(stack):
    _, settings, database, executor, pool = stack
    pool.start("doomed")
    experiment_id, keys = submit(database, LONG_SPEC, SEEDS)
    executor.enqueue(keys)
    runs = wait_progress(database, experiment_id, 400)
    checkpoints = [settings.resolved_artifact_dir / checkpoint_key(run.id) for run in runs]
    wait_until(lambda: all(path.exists() for path in checkpoints), 30, "checkpoints of both runs")

    pool.kill("doomed")  # SIGKILL mid-run: no goodbye, the broker's message stays unacknowledged
    killed_at = {run.id: run.progress_step for run in runs_of(database, experiment_id)}
    pool.start("rescuer")
    finished = wait_runs(database, experiment_id)

    assert [run.status for run in finished] == [RunStatus.succeeded] * 2
    assert [run.attempt for run in finished] == [2, 2]  # claimed again once, after the lease expired
    assert all(run.error is None for run in finished)
    # even a kill between the two runs' checkpoint writes resumes: each run keeps its previous one
    assert "resumes at step" in pool.log("rescuer")
    assert "resumes at step" not in pool.log("doomed")
    assert all(step < LONG_SPEC["training"]["steps"] for step in killed_at.values())
    for run, expected in zip(finished, reference(finished), strict=True):
        stored = stored_run(database, settings, run.id)
        assert_equals_reference(stored, expected)
        assert len(stored.artifact_names) == len(set(stored.artifact_names))
    slots = [settings.resolved_artifact_dir / checkpoint_key(run.id, 1) for run in runs]
    assert not any(path.exists() for path in [*checkpoints, *slots])  # dropped once the outcome was recorded


def test_attempts_are_capped_and_the_last_reason_is_recorded(database_url):
    database = Database(database_url, pool_size=1)
    try:
        experiment_id, [key] = submit(database, with_steps(10))
        later = utcnow()
        for attempt in (1, 2):
            with database.transaction() as session:
                [claimed] = claim_batch(session, key)
                assert claimed.attempt == attempt
            with database.transaction() as session:  # a fresh heartbeat holds the lease
                assert expire_leases(session, lease_timeout_s=60, max_attempts=2).requeued == []
            with database.transaction() as session:  # …and silence past the lease loses it
                report = expire_leases(
                    session, lease_timeout_s=60, max_attempts=2, now=later.replace(year=later.year + 1)
                )
            assert (report.requeued, report.failed) == (
                ([claimed.id], []) if attempt == 1 else ([], [claimed.id])
            )
            assert report.batch_keys == ({key} if attempt == 1 else set())
        [run] = runs_of(database, experiment_id)
        assert run.status == RunStatus.failed and run.attempt == 2
        assert run.error is not None and "stopped heartbeating" in run.error and "attempt 2 of 2" in run.error
        record = experiment(database, experiment_id)
        assert (record.status, record.n_failed, record.n_running, record.n_queued) == (
            RunStatus.failed,
            1,
            0,
            0,
        )
    finally:
        database.dispose()


def test_a_broker_restarted_empty_loses_no_run_and_runs_none_twice(stack, private_redis, caplog):
    env, settings, database, executor, pool = stack
    marker = f"{env['GNI_BROKER_KEY_PREFIX']}gni:broker-marker"
    client = redis.Redis.from_url(private_redis.url)
    wait_until(lambda: client.exists(marker) == 1, 10, "the reaper's broker marker")
    client.close()
    pool.start("worker")
    # Three batches (a batch key includes the step count) for one worker: two wait on the broker.
    # Long enough that the first batch is seen training before it ends (progress every 0.2 s).
    experiments = [submit(database, with_steps(steps), SEEDS) for steps in (3000, 3001, 3002)]
    for _, keys in experiments:
        executor.enqueue(keys)
    wait_progress(database, experiments[0][0], 50)

    private_redis.kill()  # every waiting message is gone
    private_redis.start()
    for experiment_id, _ in experiments:
        runs = wait_runs(database, experiment_id, timeout=120)
        assert [run.status for run in runs] == [RunStatus.succeeded] * 2, [r.error for r in runs]
        assert [run.attempt for run in runs] == [1, 1]  # none trained twice
        for run in runs:
            names = stored_run(database, settings, run.id).artifact_names
            assert len(names) == len(set(names)) and "model.safetensors" in names
    # The reaper saw the marker gone and announced the waiting batches again (its first pass, on an
    # empty broker at start-up, says so too).
    assert caplog.text.count("the broker lost its messages") >= 2


def test_the_database_vanishing_mid_run_is_ridden_out(stack, private_postgres):
    _, settings, database, executor, pool = stack
    pool.start("worker")
    experiment_id, keys = submit(database, LONG_SPEC, SEEDS)
    executor.enqueue(keys)
    wait_progress(database, experiment_id, 300)

    private_postgres.kill()  # SIGKILL: open transactions die with it
    time.sleep(6.0)  # longer than a lease
    private_postgres.start()
    finished = wait_runs(database, experiment_id, timeout=120)

    assert [run.status for run in finished] == [RunStatus.succeeded] * 2, [r.error for r in finished]
    assert [run.attempt for run in finished] == [1, 1]  # the worker backed off; nobody re-queued it
    log = pool.log("worker")
    assert "will retry" in log or "retrying" in log
    for run, expected in zip(finished, reference(finished), strict=True):
        assert_equals_reference(stored_run(database, settings, run.id), expected)  # nothing lost or doubled


def test_cancelling_queued_and_running_runs_in_the_celery_executor(stack):
    _, _, database, executor, pool = stack
    pool.start("worker")
    running_id, running_keys = submit(database, with_steps(4000), SEEDS)
    queued_id, queued_keys = submit(database, with_steps(4001), SEEDS)
    executor.enqueue(running_keys + queued_keys)
    check_cancellation(database, running_id, queued_id)
