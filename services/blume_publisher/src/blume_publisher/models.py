"""The Blume patient record store (the portal's side): accounts and their record entries."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from blume_runtime.db import timestamp_column
from sqlalchemy import JSON, Enum, UniqueConstraint
from sqlmodel import Field, SQLModel


class AccountStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"


class ConsentDirective(StrEnum):
    WITHHOLD_PORTAL = "withhold_portal"
    """Nothing may be published into the patient's portal record."""
    WITHHOLD_EXTERNAL_LINKS = "withhold_external_links"
    """The patient's studies may not be sent to external recipients (Ontario's lock box)."""


def _text_enum(enum: type[StrEnum], length: int) -> Any:
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [member.value for member in members],
    )


class PatientAccount(SQLModel, table=True):
    __tablename__ = "blume_patient_accounts"

    blume_patient_id: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(max_length=64)
    mrn: str = Field(max_length=64)
    email: str = Field(max_length=254)
    locale: str = Field(max_length=8)
    email_notifications: bool
    email_notifications_set_at: datetime | None = timestamp_column(nullable=True)
    """When ``email_notifications`` last changed by a timestamped source (the patient)."""
    email_notifications_by: str | None = Field(default=None, max_length=16)
    """``patient`` when the patient chose it themselves (one-click unsubscribe); an import
    does not silently undo that choice unless its own value is newer."""
    status: AccountStatus = Field(sa_type=_text_enum(AccountStatus, 16))
    withhold_portal: bool = False
    withhold_external_links: bool = False
    updated_at: datetime = timestamp_column()

    @property
    def active(self) -> bool:
        return self.status is AccountStatus.ACTIVE

    @property
    def consent(self) -> list[ConsentDirective]:
        directives = []
        if self.withhold_portal:
            directives.append(ConsentDirective.WITHHOLD_PORTAL)
        if self.withhold_external_links:
            directives.append(ConsentDirective.WITHHOLD_EXTERNAL_LINKS)
        return directives


class RecordEntry(SQLModel, table=True):
    """One study in one patient's record, as a FHIR R5 ImagingStudy."""

    __tablename__ = "blume_record_entries"
    __table_args__ = (
        UniqueConstraint("blume_patient_id", "study_instance_uid", name="uq_blume_entry_study"),
    )

    entry_id: str = Field(primary_key=True, max_length=36)
    blume_patient_id: str = Field(
        foreign_key="blume_patient_accounts.blume_patient_id", max_length=64, index=True
    )
    tenant_id: str = Field(max_length=64)
    study_instance_uid: str = Field(max_length=64)
    share_id: str = Field(max_length=36, description="The share that first published it.")
    imaging_study: dict[str, Any] = Field(sa_type=JSON)
    published_at: datetime = timestamp_column()
    hidden_at: datetime | None = timestamp_column(nullable=True)
    traceparent: str | None = Field(default=None, max_length=55)
    """The publishing share's trace context: the portal's view events join it."""
