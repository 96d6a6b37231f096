"""Importing patient accounts (JSON Lines) into the record store, and describing one for ops.

blume_publisher owns the accounts; every change is announced as ``patient.account.updated``,
from which the dispatcher and the access gateway keep projections of their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

from blume_contracts.events import EmailAddress, Identifier, PatientAccountUpdated
from blume_contracts.locales import Locale, narrow_locale
from blume_runtime.db import utcnow
from blume_runtime.transport import OutgoingMessage
from blume_runtime.unit_of_work import UnitOfWork
from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_publisher.models import AccountStatus, ConsentDirective, PatientAccount, RecordEntry

PRODUCER: Final = "blume_publisher"


class AccountRecord(BaseModel):
    """One line of an import file: exactly these fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blume_patient_id: Identifier
    tenant_id: Identifier
    mrn: Identifier
    email: EmailAddress
    locale: Locale
    email_notifications: StrictBool
    status: Literal["active", "inactive"]
    consent: list[ConsentDirective]


class ImportFileError(ValueError):
    """A line of the import file is not an account; nothing was imported."""


def parse_accounts(text: str) -> list[AccountRecord]:
    """Every line must parse: an import is all or nothing."""
    records: list[AccountRecord] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(AccountRecord.model_validate(json.loads(line)))
        except json.JSONDecodeError as error:
            raise ImportFileError(f"line {number}: not JSON ({error.msg})") from None
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}"
                for e in error.errors(include_input=False)[:3]
            )
            raise ImportFileError(f"line {number}: {problems}") from None
    if not records:
        raise ImportFileError("no accounts in the file")
    ids = [record.blume_patient_id for record in records]
    if len(set(ids)) != len(ids):
        raise ImportFileError("the same blume_patient_id appears more than once")
    return records


@dataclass(frozen=True, slots=True)
class ImportResult:
    created: int
    updated: int
    staged: list[OutgoingMessage]
    """One ``patient.account.updated`` per account, in the outbox of the import's transaction:
    publish them once it commits (the outbox sweep does, if no one else)."""


def account_event(account: PatientAccount) -> PatientAccountUpdated:
    """What the other services learn of an account (their projections' only source)."""
    return PatientAccountUpdated(
        blume_patient_id=account.blume_patient_id,
        tenant_id=account.tenant_id,
        mrn=account.mrn,
        email=account.email,
        locale=narrow_locale(account.locale),
        email_notifications=account.email_notifications,
        status=account.status.value,
        withhold_portal=account.withhold_portal,
        withhold_external_links=account.withhold_external_links,
        updated_at=account.updated_at,
    )


def _imported_columns(record: AccountRecord) -> dict[str, Any]:
    """What an import writes to an account, new or replaced: everything but its key."""
    return {
        **record.model_dump(include={"tenant_id", "mrn", "email", "locale", "email_notifications"}),
        "status": AccountStatus(record.status),
        "withhold_portal": ConsentDirective.WITHHOLD_PORTAL in record.consent,
        "withhold_external_links": ConsentDirective.WITHHOLD_EXTERNAL_LINKS in record.consent,
        "updated_at": utcnow(),
    }


async def import_accounts(
    session: AsyncSession, records: list[AccountRecord], *, correlation_id: str
) -> ImportResult:
    """Create or replace each account and stage its ``patient.account.updated``."""
    created = updated = 0
    work = UnitOfWork(service=PRODUCER, session=session)
    for record in records:
        account = await session.get(PatientAccount, record.blume_patient_id)
        columns = _imported_columns(record)
        if account is None:
            account = PatientAccount(blume_patient_id=record.blume_patient_id, **columns)
            created += 1
        else:
            account.sqlmodel_update(columns)
            updated += 1
        session.add(account)
        work.emit(
            "patient.account.updated",
            account_event(account),
            tenantid=account.tenant_id,
            correlationid=correlation_id,
        )
    return ImportResult(created, updated, work.staged)


def mask_email(address: str) -> str:
    """Enough for an operator to recognise the address, not to harvest it."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_identifier(value: str) -> str:
    return f"***{value[-4:]}" if len(value) > 4 else "***"


async def describe_account(session: AsyncSession, blume_patient_id: str) -> dict[str, Any] | None:
    """What an operator needs about an account: state and entries, identifiers masked."""
    account = await session.get(PatientAccount, blume_patient_id)
    if account is None:
        return None
    entries = (
        await session.exec(
            select(RecordEntry)
            .where(col(RecordEntry.blume_patient_id) == blume_patient_id)
            .order_by(col(RecordEntry.published_at))
        )
    ).all()
    return {
        "blume_patient_id": account.blume_patient_id,
        "tenant_id": account.tenant_id,
        "status": account.status.value,
        "mrn": mask_identifier(account.mrn),
        "email": mask_email(account.email),
        "locale": account.locale,
        "email_notifications": account.email_notifications,
        "consent": [directive.value for directive in account.consent],
        "entries": [
            {
                "entry_id": entry.entry_id,
                "share_id": entry.share_id,
                "published_at": entry.published_at.isoformat(),
                "visible": entry.hidden_at is None,
            }
            for entry in entries
        ],
    }
