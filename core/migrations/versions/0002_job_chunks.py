"""job chunks: chunk counters on jobs and a row per chunk of a long file

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A database made by create_all of these very models is adopted as the baseline
    # (core/migrate.py) although it already has what this revision adds: add only what is missing.
    inspector = sa.inspect(op.get_bind())
    columns = {c["name"] for c in inspector.get_columns("jobs")}
    with op.batch_alter_table("jobs") as batch:
        if "chunks_total" not in columns:
            batch.add_column(sa.Column("chunks_total", sa.Integer(), nullable=True))
        if "chunks_done" not in columns:
            batch.add_column(
                sa.Column("chunks_done", sa.Integer(), nullable=False, server_default="0")
            )
    if "job_chunks" not in inspector.get_table_names():
        op.create_table(
            "job_chunks",
            sa.Column("job_id", sa.String(length=32), nullable=False),
            sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("done", sa.Boolean(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("job_id", "idx"),
        )


def downgrade() -> None:
    op.drop_table("job_chunks")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("chunks_done")
        batch.drop_column("chunks_total")
