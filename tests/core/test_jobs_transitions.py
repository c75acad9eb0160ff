"""Claiming and finishing a job in one statement each (UPDATE … RETURNING): the job handed
back is the row as the UPDATE left it, read back here with plain ``sqlite3``; a finished job is
neither claimed nor finished again. The same runs on PostgreSQL in
tests/integration/test_jobs_postgres.py."""

from __future__ import annotations

from pathlib import Path

from core.jobs import JobStore
from core.names import JobStatus, Priority
from tests.core.test_jobs_limits import db_path, rows, store

__all__ = ["db_path", "store"]


def new_job(store: JobStore) -> str:
    job, _ = store.create(
        filename="take.ogg",
        size_bytes=1234,
        sha256="ab" * 32,
        profile="standard",
        priority=Priority.BATCH.value,
    )
    return job.id


def check_claim_and_succeed(store: JobStore, read: object) -> None:
    """``read(sql, *params)`` returns the rows of a query made outside JobStore."""
    job_id = new_job(store)
    claimed = store.claim(job_id)
    assert claimed is not None
    [(status, attempts, stage)] = read(  # type: ignore[operator]
        "SELECT status, attempts, stage FROM jobs WHERE id = %s", job_id
    )
    assert (claimed.status.value, claimed.attempts, claimed.stage) == (status, attempts, stage)
    assert (status, attempts, stage) == ("running", 1, "starting")
    assert claimed.started_at is not None and claimed.started_at.tzinfo is not None

    again = store.claim(job_id)  # a second delivery of a job still running counts its attempt
    assert again is not None and again.attempts == 2

    ended = store.succeed(job_id, result_prefix="results/x/", analyzer_version="9.9.9")
    assert ended is not None
    [(status, prefix, version, percent)] = read(  # type: ignore[operator]
        "SELECT status, result_prefix, analyzer_version, percent FROM jobs WHERE id = %s", job_id
    )
    assert (status, prefix, version, percent) == ("succeeded", "results/x/", "9.9.9", 100.0)
    assert ended.status is JobStatus.SUCCEEDED and ended.result_prefix == "results/x/"
    assert ended.finished_at is not None

    # Finished: a redelivery claims nothing and counts no attempt; no second success.
    assert store.claim(job_id) is None
    assert store.succeed(job_id, result_prefix="other/", analyzer_version="0") is None
    [(attempts, prefix)] = read(  # type: ignore[operator]
        "SELECT attempts, result_prefix FROM jobs WHERE id = %s", job_id
    )
    assert (attempts, prefix) == (2, "results/x/")
    assert store.claim("no-such-job") is None


def test_claim_and_succeed_return_the_row_as_updated(store: JobStore, db_path: Path) -> None:
    check_claim_and_succeed(store, lambda sql, *p: rows(db_path, sql.replace("%s", "?"), *p))
