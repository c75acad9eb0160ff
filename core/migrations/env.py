"""Alembic environment of the job store.

There is no alembic.ini: ``core.migrate`` builds the Config in code and hands over either an
open connection (``config.attributes["connection"]``) or a URL
(``config.attributes["database_url"]``). The URL never goes through ``set_main_option``, whose
ConfigParser interpolation would mangle a ``%`` in a password.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from core.database import make_engine
from core.jobs import Base

# Any fixed number: every earshot process contending to migrate one PostgreSQL database
# takes the same advisory lock, so only one runs the DDL and the others then find it done.
PG_MIGRATION_LOCK = 0x6561727368

config = context.config
target_metadata = Base.metadata


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Taken inside the migration transaction, released at its commit; the version
            # table is read after it, so a waiter sees the winner's revision.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK}
            )
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    # No answer deadline: a migration may wait for another process's advisory lock, and an
    # index build may take long.
    engine = make_engine(config.attributes["database_url"], answer_timeout_s=None)
    try:
        with engine.connect() as connection:
            run_with(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("earshot migrations run online only (`earshot migrate`)")
run_online()
