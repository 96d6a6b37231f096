"""Importing patient accounts (JSON Lines) into the record store, and describing one for ops.

blume_publisher owns the accounts; every change is announced as ``patient.account.updated``,
from which the dispatcher and the access gateway keep projections of their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from blume_contracts.events import EmailAddress, Identifier, PatientAccountUpdated
from blume_contracts.locales import Locale, narrow_locale
from blume_runtime.db import utcnow
from blume_runtime.transport import OutgoingMessage
from blume_runtime.unit_of_work import UnitOfWork
from pydantic import AwareDatetime, BaseModel, ConfigDict, StrictBool, ValidationError
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
    email_notifications_set_at: AwareDatetime | None = None
    """When the source system last had this preference changed; without it, a patient's
    own choice made in Blume is kept over the file's value."""
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
    kept_choices: list[str] = field(default_factory=list)
    """Accounts whose patient's own, newer email-notification choice the import kept."""


def account_event(account: PatientAccount) -> PatientAccountUpdated:
    """What the other services learn of an account (their projections' only source): the
    account's columns of the same names, its locale narrowed to one the emails are written in."""
    columns = account.model_dump(include=set(PatientAccountUpdated.model_fields), mode="json")
    return PatientAccountUpdated.model_validate(
        {**columns, "locale": narrow_locale(account.locale)}
    )


def _imported_columns(record: AccountRecord) -> dict[str, Any]:
    """What an import writes to an account, new or replaced: everything but its key."""
    return {
        **record.model_dump(include={"tenant_id", "mrn", "email", "locale"}),
        "status": AccountStatus(record.status),
        "withhold_portal": ConsentDirective.WITHHOLD_PORTAL in record.consent,
        "withhold_external_links": ConsentDirective.WITHHOLD_EXTERNAL_LINKS in record.consent,
        "updated_at": utcnow(),
    }


def _notification_choice(record: AccountRecord) -> dict[str, Any]:
    """The file's email-notification choice, with when it was made, if the file says."""
    return {
        "email_notifications": record.email_notifications,
        "email_notifications_set_at": record.email_notifications_set_at,
        "email_notifications_by": "import" if record.email_notifications_set_at else None,
    }


async def import_accounts(
    session: AsyncSession, records: list[AccountRecord], *, correlation_id: str
) -> ImportResult:
    """Create or replace each account and stage its ``patient.account.updated``."""
    created = updated = 0
    kept: list[str] = []
    work = UnitOfWork(service=PRODUCER, session=session)
    for record in records:
        account = await session.get(PatientAccount, record.blume_patient_id)
        columns = _imported_columns(record)
        if account is None:
            account = PatientAccount(
                blume_patient_id=record.blume_patient_id, **columns, **_notification_choice(record)
            )
            created += 1
        else:
            account.sqlmodel_update(columns)
            if patients_choice_is_newer(account, record):
                kept.append(
                    f"{account.blume_patient_id}: kept the patient's own choice of "
                    f"{account.email_notifications_set_at:%Y-%m-%dT%H:%MZ} (email notifications "
                    f"{'on' if account.email_notifications else 'off'}) over the file's"
                )
            else:
                account.sqlmodel_update(_notification_choice(record))
            updated += 1
        session.add(account)
        announce(work, account, correlation_id)
    return ImportResult(created, updated, work.staged, kept)


def patients_choice_is_newer(account: PatientAccount, record: AccountRecord) -> bool:
    """The patient chose otherwise in Blume, and the file's value is not known to be newer."""
    if account.email_notifications_by != "patient" or account.email_notifications_set_at is None:
        return False
    if record.email_notifications == account.email_notifications:
        return False
    stated = record.email_notifications_set_at
    return stated is None or stated <= account.email_notifications_set_at


async def apply_unsubscribe(
    work: UnitOfWork,
    blume_patient_id: str,
    tenant_id: str,
    at: datetime,
    *,
    correlation_id: str | None = None,
) -> PatientAccount | None:
    """The patient's one-click unsubscribe: email notifications off as of ``at`` (an older
    request than the account's newest timestamped choice changes nothing)."""
    session = work.session
    account = await session.get(PatientAccount, blume_patient_id, with_for_update=True)
    if account is None or account.tenant_id != tenant_id:
        return None
    if account.email_notifications_set_at is not None and account.email_notifications_set_at >= at:
        return None
    account.email_notifications = False
    account.email_notifications_set_at = at
    account.email_notifications_by = "patient"
    account.updated_at = utcnow()
    session.add(account)
    announce(work, account, correlation_id)  # None: the handled event's correlation
    return account


def announce(work: UnitOfWork, account: PatientAccount, correlation_id: str | None) -> None:
    """``patient.account.updated``: how the dispatcher and the gateway learn of a change."""
    work.emit(
        "patient.account.updated",
        account_event(account),
        tenantid=account.tenant_id,
        correlationid=correlation_id,
    )


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
        "email_notifications_set": (
            f"{account.email_notifications_set_at.isoformat()} by {account.email_notifications_by}"
            if account.email_notifications_set_at is not None
            else None
        ),
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
