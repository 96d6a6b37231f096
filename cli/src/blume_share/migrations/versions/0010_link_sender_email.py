"""The gateway's link projection keeps the sender's address, so a link locked by too many
wrong sign-in codes can tell its sender (``share.link.locked``).

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("access_gateway_links") as batch:
        batch.add_column(sa.Column("sender_email", sa.String(length=254), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("access_gateway_links") as batch:
        batch.drop_column("sender_email")
