"""Deleting experiments at the size of real sweeps: no bound-parameter limit, no invalid index."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from gni_engine.spec import RunSpec
from gni_engine.sweep import SweepSpec
from gni_service.artifacts import unnamed_keys
from gni_service.db import Database
from gni_service.experiments import create_experiment
from gni_service.migrate import downgrade_database, upgrade_database
from gni_service.models import Artifact, utcnow


def test_the_keys_no_record_names_are_found_for_any_number_of_keys(fresh_url):
    database = Database(fresh_url)
    keys = [f"experiments/exp_x/art_{i:06d}" for i in range(70_000)]  # over PostgreSQL's 65,535
    with database.transaction() as session:
        experiment, _ = create_experiment(session, SweepSpec(base=RunSpec()), name="x", max_runs=1)
        session.add(
            Artifact(
                id="art_named",
                experiment_id=experiment.id,
                run_id=None,
                kind="figure",
                name="a.png",
                key=keys[123],
                content_type="image/png",
                size=1,
                sha256="0" * 64,
                created_at=utcnow(),
            )
        )
    with database.reading() as session:
        unnamed = unnamed_keys(session, reversed(keys))
    assert unnamed == sorted(keys[:123] + keys[124:])  # every key but the one a record names
    database.dispose()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_an_invalid_index_left_by_an_interrupted_build_is_rebuilt(fresh_url):
    downgrade_database(fresh_url, "20261128_figures_nothing")
    database = Database(fresh_url)
    with database.engine.connect() as connection:  # what an interrupted CONCURRENTLY build leaves
        connection.execute(text("CREATE INDEX ix_runs_finished_at ON runs (finished_at)"))
        connection.execute(
            text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_runs_finished_at'::regclass")
        )
        connection.commit()
    upgrade_database(fresh_url)
    with database.engine.connect() as connection:
        valid = connection.execute(
            text("SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_runs_finished_at'::regclass")
        ).scalar_one()
    assert valid is True
    database.dispose()
