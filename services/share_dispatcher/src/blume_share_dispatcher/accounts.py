"""The dispatcher's projection of Blume patient accounts, for its consent rules.

blume_publisher owns the accounts; the dispatcher learns each change from
``patient.account.updated`` and keeps only what its rules read: status, MRN, the lock box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from blume_contracts.consent import AccountFacts
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import PatientAccountUpdated
from blume_contracts.projections import keep_newest
from blume_runtime.db import fetch, timestamp_column
from sqlalchemy import Executable, Index, Select, Table, bindparam, select
from sqlmodel import Field, SQLModel
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


async def apply_account(session: AsyncSession, event: CloudEvent[PatientAccountUpdated]) -> bool:
    """Keep the newest state of the account: an older copy arriving late changes nothing
    (and answers False)."""
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
    return await keep_newest(session, ProjectedAccount, update.blume_patient_id, state)


class PatientDirectory(Protocol):
    async def account(self, tenant_id: str, blume_patient_id: str) -> AccountFacts | None:
        """The tenant's account with this id, or None."""

    async def accounts_for_mrn(self, tenant_id: str, mrn: str) -> Sequence[AccountFacts]:
        """Every account of the tenant for this MRN."""


@dataclass(frozen=True, slots=True)
class ConsentFacts:
    """What the consent rules read of a projected account (``AccountFacts``)."""

    mrn: str
    active: bool
    withhold_portal: bool
    withhold_external_links: bool


_ACCOUNTS: Final[Table] = ProjectedAccount.__table__  # type: ignore[attr-defined]
_FACTS: Final = (
    _ACCOUNTS.c.mrn,
    _ACCOUNTS.c.active,
    _ACCOUNTS.c.withhold_portal,
    _ACCOUNTS.c.withhold_external_links,
)
# Built once, run on Core: a read per accepted share, with none of the ORM's loading.
_ACCOUNT: Final[Select[str, bool, bool, bool]] = select(*_FACTS).where(
    _ACCOUNTS.c.blume_patient_id == bindparam("blume_patient_id"),
    _ACCOUNTS.c.tenant_id == bindparam("tenant_id"),
)
_ACCOUNTS_FOR_MRN: Final[Select[str, bool, bool, bool]] = select(*_FACTS).where(
    _ACCOUNTS.c.tenant_id == bindparam("tenant_id"), _ACCOUNTS.c.mrn == bindparam("mrn")
)


class SqlPatientDirectory:
    """The directory over the dispatcher's own projection."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def account(self, tenant_id: str, blume_patient_id: str) -> AccountFacts | None:
        params = {"tenant_id": tenant_id, "blume_patient_id": blume_patient_id}
        found = await self._fetch(_ACCOUNT, params)
        return ConsentFacts(*found[0]) if found else None

    async def accounts_for_mrn(self, tenant_id: str, mrn: str) -> Sequence[AccountFacts]:
        params = {"tenant_id": tenant_id, "mrn": mrn}
        return [ConsentFacts(*row) for row in await self._fetch(_ACCOUNTS_FOR_MRN, params)]

    async def _fetch(self, statement: Executable, params: dict[str, str]) -> list[Any]:
        """Run a read in the transaction, with the session's pending writes flushed first.

        A Core read does not autoflush: an account projected earlier in the same batch and
        not flushed yet must still be seen. Nothing pending, nothing flushed (the usual case).
        """
        if self._session.new or self._session.dirty:
            await self._session.flush()
        return await fetch(self._session, statement, params)
