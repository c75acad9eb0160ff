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


# The columns a new job's row is compared on, against the Job that create() hands back.
CREATED_COLUMNS = (
    "id, owner, status, stage, percent, filename, size_bytes, sha256, profile, priority, "
    "upload_key, result_prefix, analyzer_version, cached, idempotency_key, attempts, "
    "error_code, error_message, request_id, callback_url"
)


def check_create_and_find(store: JobStore, read: object) -> None:
    """create() hands back the row as inserted (with and without a per-owner limit), and
    find_cached_result() finds the owner's succeeded job with that content only."""
    made = []
    for owner, max_active in (("key-a", None), ("key-b", 5)):
        job, created = store.create(
            owner=owner,
            filename="take.ogg",
            size_bytes=1234,
            sha256="cd" * 32,
            profile="standard",
            priority=Priority.BATCH.value,
            upload_key=f"uploads/{owner}",
            idempotency_key=f"idem-{owner}",
            request_id="req-1",
            callback_url="https://example.org/hook",
            extra={"format": "ogg"},
            max_active=max_active,
        )
        assert created
        [row] = read(f"SELECT {CREATED_COLUMNS} FROM jobs WHERE id = %s", job.id)  # type: ignore[operator]
        handed = tuple(getattr(job, name.strip()) for name in CREATED_COLUMNS.split(","))
        handed = tuple(v.value if isinstance(v, JobStatus) else v for v in handed)
        assert tuple(bool(v) if isinstance(v, bool) else v for v in row) == handed
        assert job.extra == {"format": "ogg"} and job.created_at.tzinfo is not None
        chunks = read("SELECT chunks_total, chunks_done FROM jobs WHERE id = %s", job.id)  # type: ignore[operator]
        assert chunks == [(None, 0)]
        made.append(job)
    first = made[0]
    find = store.find_cached_result
    assert find(owner="key-a", sha256="cd" * 32, profile="standard", analyzer_version="9") is None
    assert store.claim(first.id) is not None
    store.succeed(first.id, result_prefix="results/a/", analyzer_version="9")
    found = find(owner="key-a", sha256="cd" * 32, profile="standard", analyzer_version="9")
    assert found is not None and found.id == first.id and found.result_prefix == "results/a/"
    # Another owner, profile or analyzer version is not the same result.
    assert find(owner="key-b", sha256="cd" * 32, profile="standard", analyzer_version="9") is None
    assert find(owner="key-a", sha256="cd" * 32, profile="fast", analyzer_version="9") is None
    assert find(owner="key-a", sha256="cd" * 32, profile="standard", analyzer_version="8") is None


def test_create_and_find_read_back_the_rows(store: JobStore, db_path: Path) -> None:
    check_create_and_find(store, lambda sql, *p: rows(db_path, sql.replace("%s", "?"), *p))
