"""The sender's sharing page: launch clients, launches (the sealed study data of each), the
shares sent from the page and the gateway's projection of each share's progress.

On PostgreSQL the tables go into the gateway's own schema (``access_gateway``, migration
0011), where its role's default privileges reach them; SQLite has no schemas.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SERVICE: Final = "access_gateway"


def _schema() -> str | None:
    return SERVICE if op.get_bind().dialect.name == "postgresql" else None


def _when(name: str, *, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "access_gateway_launch_clients",
        sa.Column("client_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        _when("created_at", nullable=False),
        _when("revoked_at"),
        sa.PrimaryKeyConstraint("client_id"),
        sa.UniqueConstraint("token_hash"),
        schema=schema,
    )
    op.create_index(
        op.f("ix_access_gateway_launch_clients_tenant_id"),
        "access_gateway_launch_clients",
        ["tenant_id"],
        schema=schema,
    )
    op.create_table(
        "access_gateway_launches",
        sa.Column("launch_id", sa.String(length=36), nullable=False),
        sa.Column("url_id_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("sender_user_id", sa.String(length=128), nullable=False),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("study_key", sa.String(length=64), nullable=False),
        sa.Column("sealed_request", sa.String(), nullable=True),
        _when("created_at", nullable=False),
        _when("expires_at", nullable=False),
        _when("redeemed_at"),
        _when("signed_in_at"),
        _when("purge_at", nullable=False),
        sa.PrimaryKeyConstraint("launch_id"),
        sa.UniqueConstraint("url_id_hash"),
        schema=schema,
    )
    op.create_index(
        op.f("ix_access_gateway_launches_study_key"),
        "access_gateway_launches",
        ["study_key"],
        schema=schema,
    )
    op.create_table(
        "access_gateway_sender_shares",
        sa.Column("share_id", sa.String(length=36), nullable=False),
        sa.Column("launch_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("sender_user_id", sa.String(length=128), nullable=False),
        sa.Column("study_key", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("recipient_label", sa.String(length=254), nullable=False),
        _when("created_at", nullable=False),
        sa.PrimaryKeyConstraint("share_id"),
        schema=schema,
    )
    for column in ("launch_id", "sender_user_id", "study_key"):
        op.create_index(
            op.f(f"ix_access_gateway_sender_shares_{column}"),
            "access_gateway_sender_shares",
            [column],
            schema=schema,
        )
    op.create_table(
        "access_gateway_share_status",
        sa.Column("share_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("reason_text", sa.String(length=500), nullable=True),
        _when("accepted_at"),
        _when("expires_at"),
        _when("link_issued_at"),
        _when("email_sent_at"),
        _when("completed_at"),
        _when("revoked_at"),
        sa.Column("opened_count", sa.Integer(), nullable=False),
        _when("first_opened_at"),
        _when("last_opened_at"),
        sa.Column("accessed_count", sa.Integer(), nullable=False),
        _when("last_accessed_at"),
        sa.PrimaryKeyConstraint("share_id"),
        schema=schema,
    )


def downgrade() -> None:
    schema = _schema()
    op.drop_table("access_gateway_share_status", schema=schema)
    for column in ("launch_id", "sender_user_id", "study_key"):
        op.drop_index(
            op.f(f"ix_access_gateway_sender_shares_{column}"),
            table_name="access_gateway_sender_shares",
            schema=schema,
        )
    op.drop_table("access_gateway_sender_shares", schema=schema)
    op.drop_index(
        op.f("ix_access_gateway_launches_study_key"),
        table_name="access_gateway_launches",
        schema=schema,
    )
    op.drop_table("access_gateway_launches", schema=schema)
    op.drop_index(
        op.f("ix_access_gateway_launch_clients_tenant_id"),
        table_name="access_gateway_launch_clients",
        schema=schema,
    )
    op.drop_table("access_gateway_launch_clients", schema=schema)
