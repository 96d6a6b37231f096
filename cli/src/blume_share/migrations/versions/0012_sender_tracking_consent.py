"""What the senders issues need on the dispatcher's shares and the gateway's links.

The dispatcher keeps, per share, whom to tell (the sender's name, address and locale, the
recipient's masked address), whose study it is (the MRN a later consent directive is
matched by), and the recipient's opens and grants from the gateway's events. The gateway's
link projection keeps the sender's message, shown only once access is granted.

On PostgreSQL the tables are in their services' schemas (0011); SQLite has none.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SHARE_COLUMNS: tuple[tuple[str, sa.types.TypeEngine[Any]], ...] = (
    ("sender_name", sa.String(length=200)),
    ("sender_email", sa.String(length=254)),
    ("locale", sa.String(length=16)),
    ("recipient_hint", sa.String(length=254)),
    ("patient_mrn", sa.String(length=64)),
    ("first_opened_at", sa.DateTime(timezone=True)),
    ("last_opened_at", sa.DateTime(timezone=True)),
    ("last_accessed_at", sa.DateTime(timezone=True)),
)
_COUNTS = ("opened_count", "accessed_count")


def _schema(service: str) -> str | None:
    return service if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    with op.batch_alter_table("dispatcher_shares", schema=_schema("share_dispatcher")) as batch:
        for name, column_type in _SHARE_COLUMNS:
            batch.add_column(sa.Column(name, column_type, nullable=True))
        for name in _COUNTS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        batch.create_index("ix_dispatcher_shares_tenant_mrn", ["tenant_id", "patient_mrn"])
    with op.batch_alter_table("access_gateway_links", schema=_schema("access_gateway")) as batch:
        batch.add_column(sa.Column("message", sa.String(length=2000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("access_gateway_links", schema=_schema("access_gateway")) as batch:
        batch.drop_column("message")
    with op.batch_alter_table("dispatcher_shares", schema=_schema("share_dispatcher")) as batch:
        batch.drop_index("ix_dispatcher_shares_tenant_mrn")
        for name in reversed(_COUNTS):
            batch.drop_column(name)
        for name, _type in reversed(_SHARE_COLUMNS):
            batch.drop_column(name)
