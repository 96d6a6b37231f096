"""Server-side browser sessions: a recipient's access after a grant (absolute lifetime) and
a patient's portal sign-in, each ended by sign-out (``access_gateway_sessions``); and when
and by whom a patient account's email-notification preference was last set.

On PostgreSQL the sessions table is the gateway's (schema ``access_gateway``) and the
account columns the publisher's (schema ``blume_publisher``), as 0011 placed them.

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _schema(service: str) -> str | None:
    """Where ``service``'s tables are: its own schema on PostgreSQL; SQLite has none."""
    return service if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    gateway, publisher = _schema("access_gateway"), _schema("blume_publisher")
    op.create_table(
        "access_gateway_sessions",
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("use_number", sa.Integer(), nullable=True),
        sa.Column("auth_method", sa.String(length=16), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("session_hash"),
        schema=gateway,
    )
    op.create_index(
        op.f("ix_access_gateway_sessions_expires_at"),
        "access_gateway_sessions",
        ["expires_at"],
        unique=False,
        schema=gateway,
    )
    with op.batch_alter_table("blume_patient_accounts", schema=publisher) as batch:
        batch.add_column(
            sa.Column("email_notifications_set_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("email_notifications_by", sa.String(length=16), nullable=True))


def downgrade() -> None:
    gateway, publisher = _schema("access_gateway"), _schema("blume_publisher")
    with op.batch_alter_table("blume_patient_accounts", schema=publisher) as batch:
        batch.drop_column("email_notifications_by")
        batch.drop_column("email_notifications_set_at")
    op.drop_index(
        op.f("ix_access_gateway_sessions_expires_at"),
        table_name="access_gateway_sessions",
        schema=gateway,
    )
    op.drop_table("access_gateway_sessions", schema=gateway)
