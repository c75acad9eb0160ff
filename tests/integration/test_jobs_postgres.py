"""The job store's per-owner limit under real concurrency on PostgreSQL.

A fresh database migrated as in production; threads released at once, each creating a job for
the same owner; the rows are counted with psycopg, not through JobStore.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

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


def _libpq(database_url: str) -> str:
    """The SQLAlchemy URL of the test database as plain psycopg takes it."""
    return database_url.replace("postgresql+psycopg://", "postgresql://")


def count(database_url: str, sql: str, *params: object) -> int:
    import psycopg

    with psycopg.connect(_libpq(database_url)) as conn:
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


def _check_with_plain_sql(database_url: str, check: Callable[[JobStore, object], None]) -> None:
    """Run one of tests/core/test_jobs_transitions.py's checks on PostgreSQL, its rows read
    back with a plain psycopg connection (not JobStore's engine)."""
    import psycopg

    def read(sql: str, *params: object) -> list[tuple[object, ...]]:
        url = _libpq(database_url)
        with psycopg.connect(url) as conn:
            return conn.execute(sql, params).fetchall()

    store = JobStore(database_url)
    try:
        check(store, read)
    finally:
        store.dispose()


def test_create_and_find_read_back_the_rows_on_postgres(database_url: str) -> None:
    from tests.core.test_jobs_transitions import check_create_and_find

    _check_with_plain_sql(database_url, check_create_and_find)


def test_claim_and_succeed_return_the_row_as_updated_on_postgres(database_url: str) -> None:
    from tests.core.test_jobs_transitions import check_claim_and_succeed

    _check_with_plain_sql(database_url, check_claim_and_succeed)


def _new_job(store: JobStore) -> str:
    job, _ = store.create(
        filename="a.wav", size_bytes=1, sha256="0" * 64, profile="fast", priority="interactive"
    )
    return job.id


def test_every_status_change_is_notified_in_its_transaction(database_url: str) -> None:
    """A plain psycopg LISTEN (not earshot's listener) sees the job's id and its new status
    once per status change, and nothing for a progress write."""
    import psycopg

    from core.jobs import JOB_STATUS_CHANNEL

    url = _libpq(database_url)
    store = JobStore(database_url)
    try:
        job_id = _new_job(store)
        with psycopg.connect(url, autocommit=True) as listener:
            listener.execute(f'LISTEN "{JOB_STATUS_CHANNEL}"')
            assert store.claim(job_id) is not None
            assert store.update_progress(job_id, stage="features", percent=50.0)
            assert store.succeed(job_id, result_prefix="r/", analyzer_version="x") is not None
            assert store.succeed(job_id, result_prefix="r/", analyzer_version="x") is None
            seen = [(n.channel, n.payload) for n in listener.notifies(timeout=1.0)]
    finally:
        store.dispose()
    # Claim, success; not progress, not the no-op.
    assert seen == [
        (JOB_STATUS_CHANNEL, f"{job_id}:running"),
        (JOB_STATUS_CHANNEL, f"{job_id}:succeeded"),
    ]


def test_a_held_wait_wakes_on_a_status_change_from_another_process(database_url: str) -> None:
    """PostgresChanges wakes a one-minute wait when another connection claims the job."""
    import asyncio
    import time

    from core.jobs import JOB_STATUS_CHANNEL
    from core.wakeup import PostgresChanges
    from tests.core.test_wakeup import later

    store = JobStore(database_url)
    changes = PostgresChanges(database_url, JOB_STATUS_CHANNEL)

    async def scenario() -> tuple[bool, bool]:
        mark = changes.mark()
        deadline = time.monotonic() + 10
        while not changes.available and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert changes.available
        job_id = _new_job(store)  # an insert is no status change: it wakes nobody
        quiet = await changes.wait(mark, 0.3)
        timer = later(lambda: store.claim(job_id))
        woken = await changes.wait(changes.mark(), 60.0)  # False only after the minute
        timer.join()
        return quiet, woken

    try:
        quiet, woken = asyncio.run(scenario())
    finally:
        changes.close()
        store.dispose()
    assert quiet is False
    assert woken is True  # the claim, 0.2 s in, ended it


def test_a_status_change_wakes_the_waiters_of_that_job_only(database_url: str) -> None:
    from core.jobs import JOB_STATUS_CHANNEL
    from core.wakeup import PostgresChanges
    from tests.core.test_wakeup import check_waiters_of_that_job_only

    store = JobStore(database_url)
    changes = PostgresChanges(database_url, JOB_STATUS_CHANNEL)
    try:
        check_waiters_of_that_job_only(store, changes)
    finally:
        changes.close()
        store.dispose()


def test_pooled_connections_the_server_closed_are_replaced_unseen(database_url: str) -> None:
    """PostgreSQL ends every session of the store (as a restart or an administrator does):
    the next statements run on new connections instead of failing once per pooled one.

    The store asks the server nothing before a statement (no ``SELECT 1`` ping); the server's
    hang-up is read off each pooled connection's socket at checkout. The sessions are counted
    and ended with plain psycopg, from outside the store.
    """
    import psycopg

    url = _libpq(database_url)
    others = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    store = JobStore(database_url)
    try:
        # Several pooled connections: threads hold them at once.
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda _: _new_job(store), range(8)))
        with psycopg.connect(url, autocommit=True) as admin:
            pids = [row[0] for row in admin.execute(others).fetchall()]
            assert len(pids) >= 2
            for pid in pids:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            # Ended sessions leave pg_stat_activity once their backends are gone.
            deadline = time.monotonic() + 5
            while admin.execute(others).fetchall() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert admin.execute(others).fetchall() == []
            with ThreadPoolExecutor(4) as pool:
                jobs = list(pool.map(store.get, ids))
            assert [job.id for job in jobs] == ids
            assert store.claim(ids[0]) is not None
            now = {row[0] for row in admin.execute(others).fetchall()}
        assert now and now.isdisjoint(pids)
    finally:
        store.dispose()


def test_job_values_read_back_as_stored_on_postgres(database_url: str) -> None:
    """The per-job statements run on psycopg without SQLAlchemy's type processing: a JSON
    document, times and flags written by the store are what plain SQL reads, and what the
    store reads back."""
    import psycopg

    url = _libpq(database_url)
    extra = {"format": "ogg", "nested": {"list": [1, 2.5, None, "é"]}, "flag": True}
    store = JobStore(database_url)
    try:
        job_id = _new_job(store)
        claimed = store.claim(job_id)
        done = store.succeed(job_id, result_prefix="r/x", analyzer_version="v", extra=extra)
        read = store.get(job_id)
    finally:
        store.dispose()
    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT extra::text, cached, started_at, finished_at, attempts FROM jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
    assert stored is not None
    assert json.loads(stored[0]) == extra
    assert claimed is not None and done is not None
    assert read.extra == done.extra == extra
    assert read.cached is stored[1] is False
    assert read.started_at == claimed.started_at == stored[2]
    assert read.finished_at == stored[3] and read.finished_at.utcoffset() is not None
    assert read.attempts == stored[4] == 1


def test_a_duplicate_job_is_sqlalchemys_integrity_error_on_postgres(database_url: str) -> None:
    """A constraint the server enforces surfaces as SQLAlchemy's IntegrityError (what the
    idempotency path and the API catch), and the store goes on answering after it."""
    from sqlalchemy.exc import IntegrityError

    store = JobStore(database_url)
    try:
        job_id = _new_job(store)
        with pytest.raises(IntegrityError):
            store.create(
                job_id=job_id,
                filename="b.wav",
                size_bytes=2,
                sha256="1" * 64,
                profile="fast",
                priority="batch",
            )
        assert store.get(job_id).filename == "a.wav"
    finally:
        store.dispose()


def test_a_session_ended_mid_statement_fails_it_as_an_outage_once(database_url: str) -> None:
    """The server ends the store's session while its claim waits on a row lock: the claim
    fails with SQLAlchemy's OperationalError (a task retries it, the API answers 503), the
    broken connection is not pooled again, and the next statements succeed."""
    import psycopg
    from sqlalchemy.exc import OperationalError

    url = _libpq(database_url)
    store = JobStore(database_url)
    try:
        job_id = _new_job(store)
        with psycopg.connect(url) as locker, psycopg.connect(url, autocommit=True) as admin:
            locker.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
            with ThreadPoolExecutor(1) as pool:
                claim = pool.submit(store.claim, job_id)
                waiting = (
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
                deadline = time.monotonic() + 5
                while not (pids := admin.execute(waiting).fetchall()):
                    assert time.monotonic() < deadline, "the claim never waited on the lock"
                    time.sleep(0.02)
                admin.execute("SELECT pg_terminate_backend(%s)", (pids[0][0],))
                with pytest.raises(OperationalError):
                    claim.result(timeout=10)
            locker.rollback()
        # Every later statement runs on a live connection: none fails on the dead one.
        for _ in range(6):
            assert store.get(job_id).status.value == "queued"
        assert store.claim(job_id) is not None
    finally:
        store.dispose()
