"""The record store's accounts lose their (tenant, MRN) index: it served the dispatcher's
lock-box look-up, which reads the dispatcher's own projection of the accounts since
migration 0009, and nothing else looks the record store's accounts up by MRN.

On PostgreSQL the table is in the publisher's schema (migration 0011).

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_blume_patient_accounts_tenant_mrn"
_TABLE = "blume_patient_accounts"


def _schema() -> str | None:
    return "blume_publisher" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    op.drop_index(_INDEX, table_name=_TABLE, schema=_schema())


def downgrade() -> None:
    op.create_index(_INDEX, _TABLE, ["tenant_id", "mrn"], schema=_schema())
