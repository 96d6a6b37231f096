"""Blume patient record store: accounts and record entries

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 04:09:35.826558
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blume_patient_accounts",
        sa.Column("blume_patient_id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("mrn", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("email_notifications", sa.Boolean(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("active", "inactive", name="accountstatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("withhold_portal", sa.Boolean(), nullable=False),
        sa.Column("withhold_external_links", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("blume_patient_id"),
    )
    op.create_index(
        "ix_blume_patient_accounts_tenant_mrn",
        "blume_patient_accounts",
        ["tenant_id", "mrn"],
        unique=False,
    )
    op.create_table(
        "blume_record_entries",
        sa.Column("entry_id", sa.String(length=36), nullable=False),
        sa.Column("blume_patient_id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("share_id", sa.String(length=36), nullable=False),
        sa.Column("imaging_study", sa.JSON(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hidden_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["blume_patient_id"],
            ["blume_patient_accounts.blume_patient_id"],
        ),
        sa.PrimaryKeyConstraint("entry_id"),
        sa.UniqueConstraint("blume_patient_id", "study_instance_uid", name="uq_blume_entry_study"),
    )
    op.create_index(
        op.f("ix_blume_record_entries_blume_patient_id"),
        "blume_record_entries",
        ["blume_patient_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_blume_record_entries_blume_patient_id"), table_name="blume_record_entries"
    )
    op.drop_table("blume_record_entries")
    op.drop_index("ix_blume_patient_accounts_tenant_mrn", table_name="blume_patient_accounts")
    op.drop_table("blume_patient_accounts")
