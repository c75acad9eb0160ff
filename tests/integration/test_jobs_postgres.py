"""The job store's per-owner limit under real concurrency on PostgreSQL.

A fresh database migrated as in production; threads released at once, each creating a job for
the same owner; the rows are counted with psycopg, not through JobStore.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.jobs import JobStore
from core.migrate import upgrade
from tests.core.test_jobs_limits import LIMIT, THREADS, create_concurrently
from tests.integration.conftest import fresh_postgres_database

pytestmark = pytest.mark.integration


@pytest.fixture
def database_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        upgrade(url)
        yield url


def count(database_url: str, sql: str, *params: object) -> int:
    import psycopg

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def test_concurrent_creations_never_exceed_the_limit_on_postgres(database_url: str) -> None:
    store = JobStore(database_url)
    try:
        for owner in ("alpha", "beta", "gamma"):
            outcome = create_concurrently(store, owner=owner)
            assert outcome.other == []
            assert len(outcome.created) == LIMIT
            assert len(outcome.refused) == THREADS - LIMIT
    finally:
        store.dispose()
    for owner in ("alpha", "beta", "gamma"):
        sql = "SELECT count(*) FROM jobs WHERE owner = %s AND status IN ('queued', 'running')"
        assert count(database_url, sql, owner) == LIMIT
        assert count(database_url, "SELECT count(*) FROM jobs WHERE owner = %s", owner) == LIMIT
    # Every advisory lock was transaction-scoped: none is left behind.
    held = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    assert count(database_url, held) == 0


def test_claim_and_succeed_return_the_row_as_updated_on_postgres(database_url: str) -> None:
    import psycopg

    from tests.core.test_jobs_transitions import check_claim_and_succeed

    def read(sql: str, *params: object) -> list[tuple[object, ...]]:
        url = database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url) as conn:
            return conn.execute(sql, params).fetchall()

    store = JobStore(database_url)
    try:
        check_claim_and_succeed(store, read)
    finally:
        store.dispose()
