"""Schema migrations of the job store (Alembic), driven from code rather than an alembic.ini.

``earshot migrate`` runs :func:`upgrade` against ``EARSHOT_DATABASE_URL``; the embedded mode
calls it on start, so a SQLite file is always at the newest schema before anything reads it.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from core.database import make_engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# The first revision: exactly the schema ``Base.metadata.create_all`` made before migrations.
BASELINE = "0001"
VERSION_TABLE = "alembic_version"


def alembic_config(database_url: str) -> Config:
    """An Alembic Config for the job store at ``database_url`` (no ini file involved)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def head() -> str:
    """The newest revision shipped with this code."""
    revision = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert revision is not None, "the migrations directory has no revisions"
    return revision


def current(database_url: str) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    sqlite_path = _sqlite_path(database_url)
    if sqlite_path is not None and not sqlite_path.exists():
        return None  # asking must not create an empty database file
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def upgrade(database_url: str, *, revision: str = "head") -> str | None:
    """Bring the database at ``database_url`` to ``revision``; return the revision it is at.

    Safe to call from several processes at once: SQLite callers queue on a lock file beside the
    database, PostgreSQL callers on an advisory lock (see migrations/env.py).
    """
    config = alembic_config(database_url)
    with _sqlite_lock(database_url):
        _adopt_unversioned(database_url, config)
        before = current(database_url)
        command.upgrade(config, revision)
        after = current(database_url)
    if after != before:
        log.info("job store schema migrated from revision %s to %s", before, after)
    return after


def _adopt_unversioned(database_url: str, config: Config) -> None:
    # A database made by create_all before migrations existed (an early `make run`) has the
    # jobs table but no version table; it is the baseline schema, so record it as such
    # instead of failing on "table jobs already exists".
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    if "jobs" in tables and VERSION_TABLE not in tables:
        command.stamp(config, BASELINE)


@contextmanager
def _sqlite_lock(database_url: str) -> Iterator[None]:
    db_path = _sqlite_path(database_url)
    if db_path is None:
        yield
        return
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with open(db_path.with_name(db_path.name + ".migrate.lock"), "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _sqlite_path(database_url: str) -> Path | None:
    if not database_url.startswith("sqlite:///") or database_url == "sqlite:///:memory:":
        return None
    return Path(database_url.removeprefix("sqlite:///"))
