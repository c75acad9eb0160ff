"""The job store: the record of truth for every analysis job.

SQLAlchemy 2 on SQLite (WAL, the embedded default) or PostgreSQL (``EARSHOT_DATABASE_URL``).
Celery's result backend is never used for state: a job's row says where it is, and every state
change is a conditional update, so a redelivered task or a late worker cannot move a job
backwards (a canceled job stays canceled; a succeeded job is never re-run). How connections
behave (timeouts, keepalives, SQLite pragmas) is ``core.database``.

Over 500 lines for a reason: ``JobStore`` is the job state machine, each method one
conditional transaction; split across modules its transitions could no longer be read
side by side.
"""

from __future__ import annotations

import base64
import builtins
import functools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Insert,
    Integer,
    Select,
    String,
    Text,
    Update,
    bindparam,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from core.database import DriverStatement, make_engine, run_on_driver
from core.errors import JobNotFound, TooManyActiveJobs
from core.names import JobStatus
from core.wakeup import announce_status_change, status_folder

ACTIVE_STATES = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)

# Jobs created without an API key belong to the anonymous owner. It is a value, not NULL,
# because NULLs never collide in a unique index and idempotency keys must.
ANONYMOUS = ""

# First half of the two-int PostgreSQL advisory lock that serialises job creation per owner
# (the second half is hashtext(owner)). The two-int key space is apart from the single-bigint
# one of the migration lock; two owners whose hashes collide only wait on each other.
PG_OWNER_LOCK_SPACE = 0x6A6F6273  # "jobs"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True, default=ANONYMOUS)
    status: Mapped[str] = mapped_column(String(16), index=True)
    stage: Mapped[str | None] = mapped_column(String(32))
    percent: Mapped[float] = mapped_column(Float, default=0.0)
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    profile: Mapped[str] = mapped_column(String(32))
    priority: Mapped[str] = mapped_column(String(16))
    upload_key: Mapped[str | None] = mapped_column(String(255))
    result_prefix: Mapped[str | None] = mapped_column(String(255))
    analyzer_version: Mapped[str | None] = mapped_column(String(32))
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    callback_url: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # A long file analysed in chunks (tasks/chunks.py): how many, and how many are stored.
    chunks_total: Mapped[int | None] = mapped_column(Integer)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_jobs_owner_idempotency", "owner", "idempotency_key", unique=True),
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_cache", "sha256", "profile", "analyzer_version", "status"),
    )


class JobChunkRow(Base):
    """One chunk of a job analysed in chunks: its deliveries and whether its partial is stored."""

    __tablename__ = "job_chunks"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Job:
    """A detached snapshot of one job row."""

    id: str
    owner: str
    status: JobStatus
    stage: str | None
    percent: float
    filename: str
    size_bytes: int
    sha256: str
    profile: str
    priority: str
    upload_key: str | None
    result_prefix: str | None
    analyzer_version: str | None
    cached: bool
    idempotency_key: str | None
    attempts: int
    error_code: str | None
    error_message: str | None
    request_id: str | None
    callback_url: str | None
    extra: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        """From a ``JobRow`` or a Core row of the jobs table's columns."""
        values = {name: getattr(row, name) for name in cls.__dataclass_fields__}
        values["status"] = JobStatus(row.status)
        values["extra"] = dict(row.extra or {})
        for name in ("created_at", "updated_at", "started_at", "finished_at"):
            # SQLite hands back naive datetimes; every stored time is UTC.
            if values[name] is not None and values[name].tzinfo is None:
                values[name] = values[name].replace(tzinfo=UTC)
        return cls(**values)


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError on a malformed cursor."""
    padded = cursor + "=" * (-len(cursor) % 4)
    created, _, job_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
    if not job_id:
        raise ValueError("malformed cursor")
    return datetime.fromisoformat(created), job_id


# PostgreSQL: every status change of a job is announced on this channel (the job's id and its
# new status as the payload, ``core.wakeup.change_note``), in the transaction that makes it, so
# the API's held status requests wake at once.
JOB_STATUS_CHANNEL = "earshot_job_status"


def _rows_matched(s: Session, statement: Update) -> int:
    """Run the UPDATE ``statement`` in ``s``; how many rows its WHERE matched.

    ``Session.execute`` is typed as returning a plain ``Result``; for an UPDATE it is the
    ``CursorResult`` that carries ``rowcount``.
    """
    result = s.execute(statement)
    assert isinstance(result, CursorResult)
    return result.rowcount


def _status_in(statuses: tuple[str, ...]) -> Any:
    """``jobs.status IN (…)`` with one bind per status, each carrying its value: a list of
    plain values would make one expanding bind, whose SQL is rendered anew per execution."""
    table = Base.metadata.tables[JobRow.__tablename__]
    return table.c.status.in_([literal(status, String) for status in statuses])


@functools.cache
def _transition_statement(
    allowed: tuple[str, ...],
    names: tuple[str, ...],
    *,
    count_attempt: bool,
    returning: bool,
    notify: bool = False,
) -> Update:
    """The conditional UPDATE of a job's ``names`` columns (bound as ``v_<name>``; the job as
    ``job_id``), built once per shape.

    Building a statement per call cost more than running it: ~1.2 ms of SQLAlchemy per
    transition against ~0.3 ms for a prebuilt one on SQLite (a short job makes two).
    ``notify`` (PostgreSQL) announces the change on JOB_STATUS_CHANNEL from the RETURNING
    clause, which runs for the updated row only: one statement and round trip where an
    UPDATE and a ``SELECT pg_notify`` were two.
    """
    table = Base.metadata.tables[JobRow.__tablename__]
    values: dict[str, Any] = {
        name: bindparam(f"v_{name}", type_=table.c[name].type) for name in names
    }
    if count_attempt:
        values["attempts"] = table.c.attempts + 1
    statement = (
        update(table).where(table.c.id == bindparam("job_id"), _status_in(allowed)).values(values)
    )
    columns: list[Any] = list(table.c) if returning else []
    if notify:
        # The payload is ``change_note(id, status)``: the row as updated, so the new status.
        note = table.c.id.concat(":").concat(table.c.status)
        columns.append(func.pg_notify(JOB_STATUS_CHANNEL, note).label("notified"))
    return statement.returning(*columns) if columns else statement


@functools.cache
def _insert_statement() -> Insert:
    """The INSERT of one job row, every column bound by name."""
    return insert(Base.metadata.tables[JobRow.__tablename__])


@functools.cache
def _cached_result_statement() -> Select[Any]:
    """The oldest succeeded job with a result of one owner, content, profile and analyzer
    version (bound as ``owner``, ``sha256``, ``profile``, ``analyzer_version``)."""
    table = Base.metadata.tables[JobRow.__tablename__]
    return (
        select(*table.c)
        .where(
            table.c.owner == bindparam("owner"),
            table.c.sha256 == bindparam("sha256"),
            table.c.profile == bindparam("profile"),
            table.c.analyzer_version == bindparam("analyzer_version"),
            table.c.status == JobStatus.SUCCEEDED.value,
            table.c.result_prefix.is_not(None),
        )
        .order_by(table.c.created_at)
        .limit(1)
    )


@functools.cache
def _idempotency_statement() -> Select[Any]:
    """The job of one owner and Idempotency-Key (bound as ``owner`` and ``key``)."""
    table = Base.metadata.tables[JobRow.__tablename__]
    return select(*table.c).where(
        table.c.owner == bindparam("owner"), table.c.idempotency_key == bindparam("key")
    )


@functools.cache
def _get_statement() -> Select[Any]:
    table = Base.metadata.tables[JobRow.__tablename__]
    return select(*table.c).where(table.c.id == bindparam("job_id"))


class JobStore:
    """Job records on SQLite or PostgreSQL."""

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        # SQLite: where status changes are announced to the API's held requests (PostgreSQL
        # announces them with NOTIFY, in the statement that makes them).
        self._status_folder: Path | None = None
        if url.startswith("sqlite:///"):
            database = Path(url.removeprefix("sqlite:///"))
            database.parent.mkdir(parents=True, exist_ok=True)
            self._status_folder = status_folder(database)
            self._status_folder.mkdir(exist_ok=True)
        self.url = url
        # PostgreSQL connections autocommit: most of the store's work is one statement (a
        # read, a conditional update, a plain insert), and a transaction around it cost two
        # more round trips (BEGIN, then COMMIT or ROLLBACK), as many as the statement itself.
        # One-statement work runs on ``engine`` (writes in ``begin()``, which commits on an
        # engine that does not autocommit, given as ``engine=``); work of several statements
        # runs in a session, whose connections are switched to READ COMMITTED transactions.
        self.engine = engine or make_engine(url, autocommit=True)
        transactions = self.engine
        if self.engine.dialect.name == "postgresql":
            transactions = self.engine.execution_options(isolation_level="READ COMMITTED")
        self._sessions = sessionmaker(transactions, expire_on_commit=False)
        # PostgreSQL: the per-job statements run on psycopg, compiled once (run_on_driver).
        self._on_driver = self.engine.dialect.name == "postgresql"
        self._driver_statements: dict[tuple[int, tuple[str, ...]], DriverStatement] = {}

    def _execute(
        self,
        statement: Any,
        params: dict[str, Any],
        *,
        column_keys: tuple[str, ...] = (),
    ) -> tuple[builtins.list[Any], int]:
        """Run one of this module's prebuilt statements (``functools.cache``d: built once, so
        known by identity) in its own transaction; its rows and the rows it matched.

        ``column_keys``: an INSERT's columns, the keys of ``params``.
        """
        if not self._on_driver:
            with self.engine.begin() as conn:
                result = conn.execute(statement, params)
                rows = builtins.list(result) if result.returns_rows else []
                assert isinstance(result, CursorResult)
                return rows, result.rowcount
        key = (id(statement), column_keys)
        driver = self._driver_statements.get(key)
        if driver is None:
            driver = DriverStatement.compile(
                statement, self.engine.dialect, column_keys=column_keys
            )
            self._driver_statements[key] = driver
        return run_on_driver(self.engine, driver, params)

    def create_schema(self) -> None:
        """Create missing tables (the embedded mode and tests; production runs migrations)."""
        Base.metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    # -- creation -------------------------------------------------------------------------

    def create(
        self,
        *,
        filename: str,
        size_bytes: int,
        sha256: str,
        profile: str,
        priority: str,
        owner: str = ANONYMOUS,
        job_id: str | None = None,
        upload_key: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
        callback_url: str | None = None,
        extra: dict[str, Any] | None = None,
        max_active: int | None = None,
    ) -> tuple[Job, bool]:
        """Insert a queued job; return ``(job, created)``.

        With an ``idempotency_key`` already used by the same owner, nothing is inserted and the
        existing job is returned with ``created=False`` (the caller compares its content).

        With ``max_active``, raises TooManyActiveJobs instead of inserting when the owner
        already has that many queued or running jobs. The count and the insert happen in one
        transaction that holds a per-owner lock, so concurrent creations cannot all see room
        for one more (a count taken before the insert let 10 parallel uploads make 6 jobs
        under a limit of 3).
        """
        now = utcnow()
        # Every column, so that the job handed back is the row as inserted.
        values: dict[str, Any] = {
            "id": job_id or new_job_id(),
            "owner": owner,
            "status": JobStatus.QUEUED.value,
            "stage": None,
            "percent": 0.0,
            "filename": filename,
            "size_bytes": size_bytes,
            "sha256": sha256,
            "profile": profile,
            "priority": priority,
            "upload_key": upload_key,
            "result_prefix": None,
            "analyzer_version": None,
            "cached": False,
            "idempotency_key": idempotency_key,
            "attempts": 0,
            "error_code": None,
            "error_message": None,
            "request_id": request_id,
            "callback_url": callback_url,
            "extra": extra or {},
            "chunks_total": None,
            "chunks_done": 0,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": None,
        }
        try:
            if max_active is None:
                # A prebuilt Core INSERT: the ORM's unit of work cost ~0.5 ms of an upload.
                self._execute(_insert_statement(), values, column_keys=tuple(values))
            else:
                with self.session() as s:
                    self._lock_owner(s, owner)
                    if idempotency_key is not None:
                        # A replay is answered with its job even when the owner is at the limit.
                        params = {"owner": owner, "key": idempotency_key}
                        existing_row = s.execute(_idempotency_statement(), params).first()
                        if existing_row is not None:
                            return Job.from_row(existing_row), False
                    active = self._count_active(s, owner)
                    if active >= max_active:
                        raise TooManyActiveJobs(active=active, limit=max_active)
                    s.execute(_insert_statement(), values)
            return Job.from_row(SimpleNamespace(**values)), True
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = self.find_by_idempotency_key(owner, idempotency_key)
            if existing is None:
                raise
            return existing, False

    def _lock_owner(self, s: Session, owner: str) -> None:
        """Serialise, until ``s`` commits, every job creation of ``owner`` that takes this lock.

        PostgreSQL: a transaction-scoped advisory lock keyed by the owner (READ COMMITTED, the
        default, gives each later statement a snapshot taken after the lock was granted, so
        the count sees every job a previous holder committed). SQLite: BEGIN IMMEDIATE takes
        the database's write lock before the count; it waits up to busy_timeout for it.
        """
        conn = s.connection()
        dialect = conn.dialect.name
        if dialect == "postgresql":
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:space, hashtext(:owner))"),
                {"space": PG_OWNER_LOCK_SPACE, "owner": owner},
            )
        elif dialect == "sqlite":
            # pysqlite (legacy transaction control) opens its transaction lazily, as a deferred
            # BEGIN before the first INSERT, and the session has run nothing yet: an explicit
            # BEGIN IMMEDIATE here is passed through as is, and the session's commit or
            # rollback ends it as usual. (Called inside a transaction, SQLite refuses it.)
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            raise NotImplementedError(f"no per-owner lock for the {dialect} database")

    @staticmethod
    def _count_active(s: Session | Connection, owner: str) -> int:
        q = select(func.count()).select_from(JobRow).where(JobRow.status.in_(ACTIVE_STATES))
        return int(s.scalar(q.where(JobRow.owner == owner)) or 0)

    def find_by_idempotency_key(self, owner: str, key: str) -> Job | None:
        rows, _ = self._execute(_idempotency_statement(), {"owner": owner, "key": key})
        return Job.from_row(rows[0]) if rows else None

    # -- reading --------------------------------------------------------------------------

    def get(self, job_id: str, *, owner: str | None = None) -> Job:
        """The job; raises JobNotFound for unknown ids and for another owner's jobs.

        ``owner=None`` skips the ownership check (workers, the reconciler).
        """
        rows, _ = self._execute(_get_statement(), {"job_id": job_id})
        if not rows or (owner is not None and rows[0].owner != owner):
            raise JobNotFound(f"job {job_id!r} not found")
        return Job.from_row(rows[0])

    def list(
        self,
        *,
        owner: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Jobs newest first; returns ``(page, next_cursor)``. Raises ValueError on a bad cursor."""
        q = select(JobRow)
        if owner is not None:
            q = q.where(JobRow.owner == owner)
        if status is not None:
            q = q.where(JobRow.status == status.value)
        if cursor:
            created, job_id = _decode_cursor(cursor)
            q = q.where(
                (JobRow.created_at < created)
                | ((JobRow.created_at == created) & (JobRow.id < job_id))
            )
        q = q.order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit + 1)
        with self.session() as s:
            rows = [Job.from_row(r) for r in s.scalars(q)]
        page = rows[:limit]
        next_cursor = _encode_cursor(page[-1]) if len(rows) > limit else None
        return page, next_cursor

    def count_active(self, *, owner: str) -> int:
        """Queued + running jobs of ``owner`` now (a hint: ``create(max_active=)`` decides)."""
        with self.engine.connect() as conn:
            return self._count_active(conn, owner)

    def find_cached_result(
        self, *, owner: str, sha256: str, profile: str, analyzer_version: str
    ) -> Job | None:
        """A succeeded job of ``owner`` with the same content, profile and analyzer version.

        Only the owner's own jobs: reusing another API key's result would answer
        ``cached: true`` at once and so tell the caller that someone else analysed that file.
        (Without API keys every job is the anonymous owner's: one tenant, reuse is shared.)
        """
        params = {
            "owner": owner,
            "sha256": sha256,
            "profile": profile,
            "analyzer_version": analyzer_version,
        }
        rows, _ = self._execute(_cached_result_statement(), params)
        return Job.from_row(rows[0]) if rows else None

    def stale_active(self, *, older_than: timedelta) -> builtins.list[Job]:
        """Queued or running jobs not updated for ``older_than`` (for the reconciler)."""
        cutoff = utcnow() - older_than
        q = select(JobRow).where(JobRow.status.in_(ACTIVE_STATES), JobRow.updated_at < cutoff)
        with self.session() as s:
            return [Job.from_row(r) for r in s.scalars(q)]

    # -- state changes (all conditional) --------------------------------------------------

    def _transition(self, job_id: str, allowed: tuple[str, ...], **values: Any) -> bool:
        """Set ``values`` on the job if its status is one of ``allowed``; whether it was."""
        return self._update(job_id, allowed, values, count_attempt=False, returning=False)[0]

    def _transition_returning(
        self, job_id: str, allowed: tuple[str, ...], *, count_attempt: bool = False, **values: Any
    ) -> Job | None:
        """``_transition`` that hands back the job as the UPDATE left it (``RETURNING``, on
        SQLite ≥ 3.35 and PostgreSQL): one statement where a write and a read were two.
        None when the row did not match (missing, or not in ``allowed``)."""
        return self._update(job_id, allowed, values, count_attempt=count_attempt, returning=True)[1]

    def _update(
        self,
        job_id: str,
        allowed: tuple[str, ...],
        values: dict[str, Any],
        *,
        count_attempt: bool,
        returning: bool,
    ) -> tuple[bool, Job | None]:
        values.setdefault("updated_at", utcnow())
        names = tuple(sorted(values))
        # A status change is announced (delivered at commit) to the API's held status
        # requests (core.wakeup); progress is not.
        notify = "status" in values and self.engine.dialect.name == "postgresql"
        statement = _transition_statement(
            allowed, names, count_attempt=count_attempt, returning=returning, notify=notify
        )
        params = {f"v_{name}": values[name] for name in names}
        params["job_id"] = job_id
        rows, count = self._execute(statement, params)
        # An UPDATE … RETURNING hands back the rows it matched; a plain one, their count.
        matched = bool(rows) if returning or notify else count > 0
        row = rows[0] if returning and rows else None
        if matched and "status" in values and self._status_folder is not None:
            announce_status_change(self._status_folder, job_id, values["status"])
        return matched, None if row is None else Job.from_row(row)

    def claim(self, job_id: str) -> Job | None:
        """Claim the job for a delivery (counts the attempt) and return it as claimed; None if
        it is finished or missing."""
        return self._transition_returning(
            job_id,
            ACTIVE_STATES,
            count_attempt=True,
            status=JobStatus.RUNNING.value,
            started_at=utcnow(),
            stage="starting",
            percent=0.0,
        )

    def mark_running(self, job_id: str) -> bool:
        """Claim the job for a delivery: counts the attempt. False if it is already finished."""
        return self.claim(job_id) is not None

    def update_progress(self, job_id: str, *, stage: str, percent: float) -> bool:
        """Record progress of a running job; False when the job is no longer running."""
        return self._transition(
            job_id,
            (JobStatus.RUNNING.value,),
            stage=stage,
            percent=round(max(0.0, min(100.0, percent)), 1),
        )

    def mark_succeeded(self, job_id: str, **result: Any) -> bool:
        """Finish the job with its stored result (``succeed``'s keywords); False when it was
        canceled or already done."""
        return self.succeed(job_id, **result) is not None

    def succeed(
        self,
        job_id: str,
        *,
        result_prefix: str,
        analyzer_version: str,
        cached: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> Job | None:
        """Finish the job with its stored result and return it as finished; None when it was
        canceled or already done."""
        values: dict[str, Any] = {
            "status": JobStatus.SUCCEEDED.value,
            "result_prefix": result_prefix,
            "analyzer_version": analyzer_version,
            "cached": cached,
            "stage": "done",
            "percent": 100.0,
            "finished_at": utcnow(),
            "error_code": None,
            "error_message": None,
        }
        if extra is not None:
            values["extra"] = extra
        return self._transition_returning(job_id, ACTIVE_STATES, **values)

    def mark_failed(self, job_id: str, *, code: str, message: str) -> bool:
        return self._transition(
            job_id,
            ACTIVE_STATES,
            status=JobStatus.FAILED.value,
            error_code=code,
            error_message=message[:2000],
            finished_at=utcnow(),
        )

    def cancel(self, job_id: str, *, owner: str | None = None) -> Job:
        """Cancel a queued or running job; a finished job is returned unchanged."""
        self.get(job_id, owner=owner)  # raises JobNotFound, also for another owner
        self._transition(
            job_id,
            ACTIVE_STATES,
            status=JobStatus.CANCELED.value,
            finished_at=utcnow(),
        )
        return self.get(job_id)

    def requeue(self, job_id: str) -> bool:
        """Put a stale active job back to queued (the reconciler re-publishes it)."""
        return self._transition(job_id, ACTIVE_STATES, status=JobStatus.QUEUED.value)

    def release_idempotency_key(self, job_id: str) -> None:
        """Free a job's idempotency key, so a retry with the same key creates a new job.

        For jobs that were never queued (the broker was down): the client was told to retry.
        """
        with self.session() as s:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(idempotency_key=None))

    def set_extra(self, job_id: str, extra: dict[str, Any]) -> None:
        with self.session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(f"job {job_id!r} not found")
            row.extra = extra
            row.updated_at = utcnow()

    # -- chunked analysis (tasks/chunks.py) -------------------------------------------------

    def start_chunks(self, job_id: str, count: int) -> bool:
        """Record that the running job is split into ``count`` chunks; False if not running.

        Safe to repeat (a redelivered parent task): existing chunk rows keep their state.
        """
        now = utcnow()
        with self.session() as s:
            matched = _rows_matched(
                s,
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value)
                .values(chunks_total=count, updated_at=now),
            )
            if not matched:
                return False
            have = set(s.scalars(select(JobChunkRow.idx).where(JobChunkRow.job_id == job_id)))
            for idx in range(count):
                if idx not in have:
                    s.add(
                        JobChunkRow(job_id=job_id, idx=idx, attempts=0, done=False, updated_at=now)
                    )
            return True

    def pending_chunks(self, job_id: str) -> builtins.list[int]:
        """Indices of the job's chunks whose partial is not stored yet."""
        q = select(JobChunkRow.idx).where(JobChunkRow.job_id == job_id, ~JobChunkRow.done)
        with self.session() as s:
            return sorted(s.scalars(q.order_by(JobChunkRow.idx)))

    def claim_chunk(self, job_id: str, idx: int) -> int | None:
        """Count a delivery of chunk ``idx``; its attempts so far, or None when it is done."""
        with self.session() as s:
            matched = _rows_matched(
                s,
                update(JobChunkRow)
                .where(JobChunkRow.job_id == job_id, JobChunkRow.idx == idx, ~JobChunkRow.done)
                .values(attempts=JobChunkRow.attempts + 1, updated_at=utcnow()),
            )
            if not matched:
                return None
            return int(
                s.scalar(
                    select(JobChunkRow.attempts).where(
                        JobChunkRow.job_id == job_id, JobChunkRow.idx == idx
                    )
                )
                or 0
            )

    def finish_chunk(self, job_id: str, idx: int) -> tuple[int, int]:
        """Mark chunk ``idx`` stored; return ``(chunks_done, chunks_total)`` after it.

        Counted once however often it is called: the chunk row flips first, and only the call
        that flipped it increments the job's counter, on the job row itself, so concurrent
        completions are serialised by that row's lock and exactly one of them sees the last.
        """
        now = utcnow()
        with self.session() as s:
            flipped = _rows_matched(
                s,
                update(JobChunkRow)
                .where(JobChunkRow.job_id == job_id, JobChunkRow.idx == idx, ~JobChunkRow.done)
                .values(done=True, updated_at=now),
            )
            if flipped:
                s.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id)
                    .values(chunks_done=JobRow.chunks_done + 1, updated_at=now)
                )
            row = s.execute(
                select(JobRow.chunks_done, JobRow.chunks_total).where(JobRow.id == job_id)
            ).one_or_none()
            if row is None:
                raise JobNotFound(f"job {job_id!r} not found")
            return int(row[0]), int(row[1] or 0)
