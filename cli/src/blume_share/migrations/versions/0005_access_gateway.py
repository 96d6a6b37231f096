"""Access gateway: sign-in code challenges and the uses of each link.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "access_gateway_otp_challenges",
        sa.Column("challenge_id", sa.String(length=36), nullable=False),
        sa.Column("link_id", sa.String(length=36), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("challenge_id"),
    )
    op.create_index(
        op.f("ix_access_gateway_otp_challenges_link_id"),
        "access_gateway_otp_challenges",
        ["link_id"],
        unique=False,
    )
    op.create_table(
        "access_gateway_link_grants",
        sa.Column("link_id", sa.String(length=36), nullable=False),
        sa.Column("use_number", sa.Integer(), nullable=False),
        sa.Column("auth_method", sa.String(length=16), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("link_id", "use_number"),
    )


def downgrade() -> None:
    op.drop_table("access_gateway_link_grants")
    op.drop_index(
        op.f("ix_access_gateway_otp_challenges_link_id"),
        table_name="access_gateway_otp_challenges",
    )
    op.drop_table("access_gateway_otp_challenges")
