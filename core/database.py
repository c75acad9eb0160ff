"""Connections to the job store's database: SQLite (embedded) or PostgreSQL through psycopg.

How a connection behaves when the database is slow, silent or gone is decided here, apart from
what the job store does with it (``core.jobs``): SQLite in WAL mode with a busy timeout, and
PostgreSQL connections whose every wait for an answer is bounded, with TCP keepalives, so a
network partition fails a statement as an outage instead of hanging its caller.
"""

from __future__ import annotations

import select
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from psycopg.abc import PQGen
from psycopg.rows import namedtuple_row
from psycopg.types.json import Json
from sqlalchemy import JSON, Engine, Select, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

# A PostgreSQL statement, commit or ping that gets no whole answer within this many seconds
# fails as an outage (OperationalError: a task retries, the API answers 503) and closes its
# connection. Without it a connection whose server went silent (a partition: no FIN, no RST)
# blocked its caller until the network healed: /readyz and every upload hung for the whole
# partition (tests/integration/test_partition.py). Job store statements are indexed reads and
# single-row updates that answer in milliseconds; migrations, which may wait for another
# process's advisory lock, pass ``answer_timeout_s=None``.
DATABASE_ANSWER_TIMEOUT_S = 5.0
# libpq's connect_timeout covers the TCP connect and the start-up exchange: a new connection
# to a silent server fails as fast as one already open.
DATABASE_CONNECT_TIMEOUT_S = 5
# The kernel's own checks, for a real partition (no acknowledgements at all): an idle pooled
# connection is probed after 30 s and declared dead after 3 unanswered probes 10 s apart, and
# data left unacknowledged for 15 s breaks the connection, so a pool does not keep dead
# connections for the kernel's default ~2 h (keepalive) or ~15 min (retransmissions).
DATABASE_TCP_OPTIONS: dict[str, Any] = {
    "connect_timeout": DATABASE_CONNECT_TIMEOUT_S,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,  # milliseconds
}


class AnswerBoundConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait for the server ends after ``answer_timeout_s``."""

    answer_timeout_s: float | None = None

    def wait[RV](self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        bound = self.answer_timeout_s if timeout is None else timeout
        started = time.monotonic()
        try:
            return super().wait(gen, interval, bound)
        except psycopg.OperationalError as exc:
            if bound is None or self.closed or time.monotonic() - started < bound:
                raise
            # The state of the session is unknown (the statement may yet arrive and run):
            # the connection is closed, and the pool replaces it.
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"no answer from the database within {bound:g} s; connection closed"
            ) from exc


def hung_up(conn: Any) -> bool:
    """Whether a pooled psycopg connection is closed, or its server spoke unasked.

    An idle connection of the job store receives nothing: it does not LISTEN, and every
    statement's answer was read whole. Bytes (or an end of file) waiting on its socket are the
    server hanging up: the "terminating connection" error a PostgreSQL restart or
    pg_terminate_backend sends before it closes, or the close itself; a connection that timed
    out is closed already. This replaces SQLAlchemy's pool_pre_ping, which asked the server
    ``SELECT 1`` before every statement: a round trip that doubled the job store's statements
    (4.4 pings per upload in the API alone). A server that went silent (a partition) is found
    by the statement's own answer timeout, as it was by the ping's.
    """
    if conn.closed:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


def make_engine(
    url: str,
    *,
    answer_timeout_s: float | None = DATABASE_ANSWER_TIMEOUT_S,
    autocommit: bool = False,
) -> Engine:
    """The SQLAlchemy engine of ``url`` (SQLite or PostgreSQL through psycopg).

    ``autocommit`` (PostgreSQL only): every statement is its own transaction unless the
    connection is given an isolation level (``execution_options(isolation_level=…)``).
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            # WAL lets the API read while a worker writes; busy_timeout rides out short locks.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    engine = create_engine(
        url,
        pool_size=5,
        max_overflow=10,
        connect_args=DATABASE_TCP_OPTIONS,
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
    )

    @event.listens_for(engine, "checkout")
    def _check_alive(
        dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry, _proxy: object
    ) -> None:
        if hung_up(dbapi_conn):
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError("the database closed this pooled connection")

    @event.listens_for(engine, "do_connect")
    def _bounded_connect(
        _dialect: Dialect,
        _record: ConnectionPoolEntry,
        cargs: tuple[Any, ...],
        cparams: dict[str, Any],
    ) -> AnswerBoundConnection:
        conn = AnswerBoundConnection.connect(*cargs, **cparams)
        conn.answer_timeout_s = answer_timeout_s
        return conn

    return engine


@dataclass(frozen=True)
class DriverStatement:
    """A prebuilt statement as psycopg runs it: its SQL text, compiled once.

    ``constants`` are the values of the binds the statement carries itself (a status it
    matches, the NOTIFY channel); ``json`` names the binds of JSON columns, which psycopg
    needs wrapped. The caller binds the rest by name, as with SQLAlchemy.
    """

    sql: str
    constants: Mapping[str, Any]
    json: frozenset[str]
    returns_rows: bool

    @classmethod
    def compile(
        cls, statement: ClauseElement, dialect: Dialect, *, column_keys: Collection[str] = ()
    ) -> DriverStatement:
        """``column_keys``: an INSERT's columns, as the parameters passed will name them."""
        compiled = cast(
            SQLCompiler,
            statement.compile(dialect=dialect, column_keys=list(column_keys) or None),
        )
        sql = str(compiled)
        if "POSTCOMPILE" in sql:
            # An expanding bind (``in_()`` of a list) is rendered anew per execution.
            raise ValueError("a statement run on the driver cannot have expanding binds")
        constants, json = {}, set()
        for bind, name in compiled.bind_names.items():
            if isinstance(bind.type, JSON):
                json.add(name)
            if not bind.required:
                constants[name] = bind.effective_value
        returns_rows = isinstance(statement, Select) or bool(compiled.effective_returning)
        return cls(sql, constants, frozenset(json), returns_rows)


def run_on_driver(
    engine: Engine, statement: DriverStatement, params: Mapping[str, Any]
) -> tuple[list[Any], int]:
    """Run ``statement`` on a pooled psycopg connection of ``engine``, committed; its rows (as
    named tuples: ``row.status``) and the rows it matched.

    The job store's per-job statements run here: SQLAlchemy's execution around a prebuilt
    statement (an execution context, parameter and result processing per call) cost ~0.1 ms
    of CPU a statement, as much as psycopg's own work, and a short job runs six. Failures are
    raised as SQLAlchemy's (``OperationalError``, ``IntegrityError``, …) as by
    ``Connection.execute``, and a connection that broke is discarded, not pooled again.
    """
    args = dict(statement.constants)
    for name, value in params.items():
        args[name] = Json(value) if name in statement.json and value is not None else value
    try:
        conn = engine.raw_connection()
    except psycopg.Error as exc:  # no connection to be had: the server is down, or silent
        raise DBAPIError.instance(None, None, exc, psycopg.Error, dialect=engine.dialect) from exc
    try:
        dbapi = conn.driver_connection
        assert isinstance(dbapi, psycopg.Connection)
        try:
            with dbapi.cursor(row_factory=namedtuple_row) as cur:
                cur.execute(statement.sql, args)
                rows = cur.fetchall() if statement.returns_rows else []
                matched = cur.rowcount
            if not dbapi.autocommit:
                dbapi.commit()
        except psycopg.Error as exc:
            broken = dbapi.closed or engine.dialect.is_disconnect(cast(Any, exc), conn, None)
            if broken:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                statement.sql,
                args,
                exc,
                psycopg.Error,
                connection_invalidated=broken,
                dialect=engine.dialect,
            ) from exc
    finally:
        conn.close()
    return rows, matched
