"""Reading and writing the record store. The dispatcher reads accounts through
``PatientDirectory``; only blume_publisher writes."""

from __future__ import annotations

import secrets
from typing import Protocol

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_publisher.models import PatientAccount, RecordEntry


class PatientDirectory(Protocol):
    async def account(self, tenant_id: str, blume_patient_id: str) -> PatientAccount | None:
        """The tenant's account with this id, or None."""

    async def accounts_for_mrn(self, tenant_id: str, mrn: str) -> list[PatientAccount]:
        """Every account of the tenant for this MRN."""


class SqlPatientDirectory:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def account(self, tenant_id: str, blume_patient_id: str) -> PatientAccount | None:
        account = await self._session.get(PatientAccount, blume_patient_id)
        return account if account is not None and account.tenant_id == tenant_id else None

    async def accounts_for_mrn(self, tenant_id: str, mrn: str) -> list[PatientAccount]:
        query = select(PatientAccount).where(
            col(PatientAccount.tenant_id) == tenant_id, col(PatientAccount.mrn) == mrn
        )
        return list((await self._session.exec(query)).all())


def new_entry_id() -> str:
    """Random, so the id says nothing about the study or the patient."""
    return f"ent_{secrets.token_hex(16)}"


async def entry_for_study(
    session: AsyncSession, blume_patient_id: str, study_instance_uid: str
) -> RecordEntry | None:
    query = select(RecordEntry).where(
        col(RecordEntry.blume_patient_id) == blume_patient_id,
        col(RecordEntry.study_instance_uid) == study_instance_uid,
    )
    return (await session.exec(query)).first()


async def entries_published_by(session: AsyncSession, share_id: str) -> list[RecordEntry]:
    query = select(RecordEntry).where(col(RecordEntry.share_id) == share_id)
    return list((await session.exec(query)).all())
