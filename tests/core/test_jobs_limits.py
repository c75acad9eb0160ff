"""The job store's guarantees under concurrency and between tenants, on a real SQLite file.

Each expectation is read back with plain ``sqlite3`` on the database file, not through JobStore.
The same race runs against PostgreSQL in tests/integration/test_jobs_postgres.py.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.errors import TooManyActiveJobs
from core.jobs import ANONYMOUS, JobStore, new_job_id
from core.names import JobStatus, Priority

THREADS = 12
LIMIT = 3
JOIN_TIMEOUT_S = 120.0


@dataclass
class Outcome:
    created: list[str] = field(default_factory=list)
    refused: list[TooManyActiveJobs] = field(default_factory=list)
    other: list[BaseException] = field(default_factory=list)


def create_concurrently(
    store: JobStore, *, owner: str, threads: int = THREADS, limit: int = LIMIT
) -> Outcome:
    """``threads`` threads released at once, each creating one job for ``owner`` under ``limit``."""
    outcome = Outcome()
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def one(i: int) -> None:
        try:
            start.wait(timeout=JOIN_TIMEOUT_S)
            job, created = store.create(
                owner=owner,
                filename=f"take {i}.wav",
                size_bytes=100 + i,
                sha256=f"{i:064x}",
                profile="standard",
                priority=Priority.INTERACTIVE.value,
                max_active=limit,
            )
            assert created
            with lock:
                outcome.created.append(job.id)
        except TooManyActiveJobs as exc:
            with lock:
                outcome.refused.append(exc)
        except BaseException as exc:
            with lock:
                outcome.other.append(exc)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(JOIN_TIMEOUT_S)
        assert not worker.is_alive(), "a job creation hung"
    return outcome


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[JobStore]:
    s = JobStore(f"sqlite:///{db_path}")
    s.create_schema()
    yield s
    s.dispose()


def rows(db_path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(sql, params).fetchall()


def active_rows(db_path: Path, owner: str) -> int:
    found = rows(
        db_path,
        "SELECT count(*) FROM jobs WHERE owner = ? AND status IN (?, ?)",
        owner,
        JobStatus.QUEUED.value,
        JobStatus.RUNNING.value,
    )
    return int(found[0][0])  # type: ignore[call-overload]


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_creations_never_exceed_the_limit(
    store: JobStore, db_path: Path, round_: int
) -> None:
    owner = f"owner-{round_}"
    outcome = create_concurrently(store, owner=owner)
    assert outcome.other == []
    assert len(outcome.created) == LIMIT
    assert len(outcome.refused) == THREADS - LIMIT
    assert all(exc.limit == LIMIT and exc.active == LIMIT for exc in outcome.refused)
    assert active_rows(db_path, owner) == LIMIT
    # No row at all for a refused creation, not even a failed one.
    assert rows(db_path, "SELECT count(*) FROM jobs WHERE owner = ?", owner) == [(LIMIT,)]
    stored = {r[0] for r in rows(db_path, "SELECT id FROM jobs WHERE owner = ?", owner)}
    assert stored == set(outcome.created)


def test_the_limit_counts_per_owner_and_frees_with_finished_jobs(
    store: JobStore, db_path: Path
) -> None:
    def create(owner: str) -> str:
        job, _ = store.create(
            owner=owner,
            filename="a.wav",
            size_bytes=1,
            sha256="a" * 64,
            profile="standard",
            priority="interactive",
            max_active=2,
        )
        return job.id

    first = [create("alpha"), create("alpha")]
    with pytest.raises(TooManyActiveJobs):
        create("alpha")
    create("beta")  # another owner has its own allowance
    assert store.mark_running(first[0])
    with pytest.raises(TooManyActiveJobs):
        create("alpha")  # running counts as active
    assert store.mark_failed(first[0], code="x", message="y")
    create("alpha")  # a finished job frees its slot
    assert active_rows(db_path, "alpha") == 2
    assert active_rows(db_path, "beta") == 1


def test_an_idempotent_replay_at_the_limit_returns_its_job(store: JobStore) -> None:
    made = [
        store.create(
            owner="alpha",
            filename="a.wav",
            size_bytes=1,
            sha256=f"{i:064x}",
            profile="standard",
            priority="interactive",
            idempotency_key=f"key-{i}",
            max_active=2,
        )[0]
        for i in range(2)
    ]
    again, created = store.create(
        owner="alpha",
        filename="a.wav",
        size_bytes=1,
        sha256=f"{0:064x}",
        profile="standard",
        priority="interactive",
        idempotency_key="key-0",
        max_active=2,
    )
    assert (again.id, created) == (made[0].id, False)


def succeed(store: JobStore, *, owner: str, sha256: str) -> str:
    job, _ = store.create(
        owner=owner,
        filename="a.wav",
        size_bytes=1,
        sha256=sha256,
        profile="standard",
        priority="interactive",
        job_id=new_job_id(),
    )
    assert store.mark_running(job.id)
    assert store.mark_succeeded(job.id, result_prefix=f"results/{job.id}/", analyzer_version="v1")
    return job.id


def test_cached_results_are_found_only_for_their_owner(store: JobStore, db_path: Path) -> None:
    sha = "c" * 64
    alphas = succeed(store, owner="alpha", sha256=sha)
    anonymous = succeed(store, owner=ANONYMOUS, sha256=sha)

    def cached(owner: str) -> str | None:
        job = store.find_cached_result(
            owner=owner, sha256=sha, profile="standard", analyzer_version="v1"
        )
        return job.id if job else None

    assert cached("alpha") == alphas
    assert cached(ANONYMOUS) == anonymous
    assert cached("beta") is None
    # The table does hold a succeeded result of those bytes: the filter is the owner alone.
    assert rows(
        db_path, "SELECT count(*) FROM jobs WHERE sha256 = ? AND status = ?", sha, "succeeded"
    ) == [(2,)]
