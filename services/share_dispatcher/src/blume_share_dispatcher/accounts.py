"""The dispatcher's projection of Blume patient accounts, for its consent rules.

blume_publisher owns the accounts; the dispatcher learns each change from
``patient.account.updated`` and keeps only what its rules read: status, MRN, the lock box.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from blume_contracts.envelope import CloudEvent
from blume_contracts.events import PatientAccountUpdated
from blume_contracts.projections import keep_newest
from blume_runtime.db import timestamp_column
from sqlalchemy import Index
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession


class ProjectedAccount(SQLModel, table=True):
    __tablename__ = "dispatcher_patient_accounts"
    # The lock box is looked up by MRN on every external share.
    __table_args__ = (Index("ix_dispatcher_patient_accounts_tenant_mrn", "tenant_id", "mrn"),)

    blume_patient_id: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(max_length=64)
    mrn: str = Field(max_length=64)
    active: bool
    withhold_portal: bool
    withhold_external_links: bool
    updated_at: datetime = timestamp_column()


async def apply_account(session: AsyncSession, event: CloudEvent[PatientAccountUpdated]) -> None:
    """Keep the newest state of the account: an older copy arriving late changes nothing."""
    update = event.data
    state = update.model_dump(
        include={
            "blume_patient_id",
            "tenant_id",
            "mrn",
            "withhold_portal",
            "withhold_external_links",
            "updated_at",
        }
    )
    state["active"] = update.status == "active"
    await keep_newest(session, ProjectedAccount, update.blume_patient_id, state)


class PatientDirectory(Protocol):
    async def account(self, tenant_id: str, blume_patient_id: str) -> ProjectedAccount | None:
        """The tenant's account with this id, or None."""

    async def accounts_for_mrn(self, tenant_id: str, mrn: str) -> list[ProjectedAccount]:
        """Every account of the tenant for this MRN."""


class SqlPatientDirectory:
    """The directory over the dispatcher's own projection."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def account(self, tenant_id: str, blume_patient_id: str) -> ProjectedAccount | None:
        account = await self._session.get(ProjectedAccount, blume_patient_id)
        return account if account is not None and account.tenant_id == tenant_id else None

    async def accounts_for_mrn(self, tenant_id: str, mrn: str) -> list[ProjectedAccount]:
        query = select(ProjectedAccount).where(
            col(ProjectedAccount.tenant_id) == tenant_id, col(ProjectedAccount.mrn) == mrn
        )
        return list((await self._session.exec(query)).all())
