"""Shares: a waiting state's start time; a tenant id as long as the envelope allows.

A rejection keeps the request's own ``tenantid``, which the CloudEvents envelope allows up to
256 characters: ``varchar(64)`` made the rejection of such a request fail for good (issue 8,
defect 4). ``waiting_since`` is when a share's notification first failed on an outage.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dispatcher_shares") as batch:
        batch.alter_column(
            "tenant_id",
            existing_type=sa.String(length=64),
            type_=sa.String(length=256),
            existing_nullable=False,
        )
        batch.add_column(sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dispatcher_shares") as batch:
        batch.drop_column("waiting_since")
        batch.alter_column(
            "tenant_id",
            existing_type=sa.String(length=256),
            type_=sa.String(length=64),
            existing_nullable=False,
        )
