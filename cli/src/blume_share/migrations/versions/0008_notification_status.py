"""Notifications: drop ``status``, which only ever held ``sent``.

A row exists only for an email the SMTP server accepted (issue 13: one possible value is no
information), so the row's existence is the status.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notifier_notifications") as batch:
        batch.drop_column("status")


def downgrade() -> None:
    with op.batch_alter_table("notifier_notifications") as batch:
        batch.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="sent")
        )
