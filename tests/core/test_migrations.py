"""Migrations take an empty SQLite or PostgreSQL database to exactly the schema the code expects.

PostgreSQL tests create a fresh database on 127.0.0.1:5432 per test and drop it afterwards; they
skip when no server answers, except under CI=true, where a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError

from core.jobs import Base, JobStore
from core.migrate import BASELINE, alembic_config, current, head, upgrade
from core.names import JobStatus

POSTGRES_ADMIN_URL = os.environ.get(
    "EARSHOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _postgres_database() -> Iterator[str]:
    admin = create_engine(
        POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {exc}")
        pytest.skip(f"no PostgreSQL at {POSTGRES_ADMIN_URL}")
    name = f"earshot_migrations_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'earshot.db'}"
    else:
        yield from _postgres_database()


def schema_differences(database_url: str) -> list[object]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def table_names(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_empty_database_upgrades_to_the_models(database_url: str) -> None:
    assert current(database_url) is None

    assert upgrade(database_url) == head()

    assert current(database_url) == head()
    assert schema_differences(database_url) == []


def test_upgrade_twice_is_a_no_op(database_url: str) -> None:
    upgrade(database_url)
    store = JobStore(database_url)
    try:
        job, _ = store.create(
            filename="a.wav", size_bytes=10, sha256="0" * 64, profile="full", priority="batch"
        )
        assert upgrade(database_url) == head()
        assert store.get(job.id).status is JobStatus.QUEUED
    finally:
        store.dispose()


def test_concurrent_upgrades_all_reach_head(database_url: str) -> None:
    # The API and every worker of the embedded mode migrate on start, at the same moment.
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        revisions = list(pool.map(upgrade, [database_url] * 2))
    assert revisions == [head()] * 2
    assert schema_differences(database_url) == []


def test_downgrade_to_base_removes_the_tables(database_url: str) -> None:
    upgrade(database_url)
    command.downgrade(alembic_config(database_url), "base")
    assert "jobs" not in table_names(database_url)
    assert current(database_url) is None


def test_database_made_by_create_all_is_adopted(database_url: str) -> None:
    store = JobStore(database_url)
    try:
        store.create_schema()
    finally:
        store.dispose()

    assert upgrade(database_url) == head()

    assert current(database_url) == head()
    assert schema_differences(database_url) == []


def test_asking_for_the_revision_creates_no_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "earshot.db"
    assert current(f"sqlite:///{db}") is None
    assert not db.exists()


def test_baseline_is_the_first_revision() -> None:
    script = ScriptDirectory.from_config(alembic_config(""))
    assert script.get_base() == BASELINE
