"""Link store: what the recipient's page shows and the policy frozen at issue time;
longer notification keys (one sign-in code email per challenge).

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Links minted before this revision get neutral values (their page falls back to them).
_NEW_LINK_COLUMNS = (
    ("correlation_id", sa.String(length=256), "unknown"),
    ("recipient_name", sa.String(length=200), ""),
    ("sender_name", sa.String(length=200), ""),
    ("sender_email", sa.String(length=254), ""),
    ("organisation", sa.String(length=200), ""),
    ("locale", sa.String(length=8), "en-CA"),
    ("recipient_auth", sa.String(length=16), "none"),
)


def upgrade() -> None:
    with op.batch_alter_table("link_issuer_links") as batch:
        for name, column_type, backfill in _NEW_LINK_COLUMNS:
            batch.add_column(sa.Column(name, column_type, nullable=False, server_default=backfill))
        batch.add_column(sa.Column("max_uses", sa.Integer(), nullable=True))
    with op.batch_alter_table("link_issuer_links") as batch:
        for name, _column_type, _backfill in _NEW_LINK_COLUMNS:
            batch.alter_column(name, server_default=None)
    with op.batch_alter_table("notifier_notifications") as batch:
        batch.alter_column(
            "notification_key",
            existing_type=sa.String(length=64),
            type_=sa.String(length=128),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("notifier_notifications") as batch:
        batch.alter_column(
            "notification_key",
            existing_type=sa.String(length=128),
            type_=sa.String(length=64),
            existing_nullable=False,
        )
    with op.batch_alter_table("link_issuer_links") as batch:
        batch.drop_column("max_uses")
        for name, _column_type, _backfill in reversed(_NEW_LINK_COLUMNS):
            batch.drop_column(name)
