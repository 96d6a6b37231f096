"""The BALP Read of a series, once per viewing session and series across every gateway
replica: a row per (session, handle, series) in ``access_gateway_series_reads``, inserted
if absent in the same transaction as the ``share.images.viewed`` it stands for.

On PostgreSQL the table is the gateway's (schema ``access_gateway``), as 0011 placed its
tables; its role's default privileges reach it.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _schema() -> str | None:
    return "access_gateway" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "access_gateway_series_reads",
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("handle", sa.String(length=65), nullable=False),
        sa.Column("series_number", sa.Integer(), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_hash", "handle", "series_number"),
        schema=schema,
    )
    op.create_index(
        op.f("ix_access_gateway_series_reads_read_at"),
        "access_gateway_series_reads",
        ["read_at"],
        unique=False,
        schema=schema,
    )


def downgrade() -> None:
    schema = _schema()
    op.drop_index(
        op.f("ix_access_gateway_series_reads_read_at"),
        table_name="access_gateway_series_reads",
        schema=schema,
    )
    op.drop_table("access_gateway_series_reads", schema=schema)
