"""Reading the record store's entries; only blume_publisher writes them. Other services
learn of accounts and entries from events, into projections of their own."""

from __future__ import annotations

import secrets

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_publisher.models import RecordEntry


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
