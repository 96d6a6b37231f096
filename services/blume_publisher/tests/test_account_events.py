"""Account changes leave blume_publisher only as ``patient.account.updated`` events, staged in
the outbox of the import's own transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from blume_contracts.envelope import CloudEvent
from blume_contracts.events import PatientAccountUpdated
from blume_publisher import import_accounts, parse_accounts
from blume_publisher.accounts import apply_unsubscribe
from blume_publisher.models import PatientAccount
from blume_runtime.db import Database, OutboxMessage
from blume_runtime.unit_of_work import UnitOfWork
from sqlmodel import select

from services.blume_publisher.tests.test_publisher_service import ACCOUNT


async def test_each_imported_account_is_announced_with_its_consent(sqlite_db: Database) -> None:
    """Importing two accounts stages one patient.account.updated each, in the outbox, with
    status and the lock-box flags the dispatcher and the gateway project."""
    lines = [
        {**ACCOUNT, "consent": ["withhold_external_links"]},
        {**ACCOUNT, "blume_patient_id": "bp-0002", "mrn": "MRN-0002", "status": "inactive"},
    ]
    text = "\n".join(json.dumps(line) for line in lines)
    async with sqlite_db.transaction() as session:
        result = await import_accounts(session, parse_accounts(text), correlation_id="import-1")
    assert (result.created, result.updated) == (2, 0)
    assert [message.routing_key for message in result.staged] == ["patient.account.updated"] * 2
    announced = [
        CloudEvent[PatientAccountUpdated].model_validate_json(message.body)
        for message in result.staged
    ]
    first, second = (event.data for event in announced)
    assert (first.blume_patient_id, first.withhold_external_links, first.status) == (
        "bp-0001",
        True,
        "active",
    )
    assert (second.blume_patient_id, second.withhold_external_links, second.status) == (
        "bp-0002",
        False,
        "inactive",
    )
    assert {event.source for event in announced} == {"/blume-share/blume_publisher"}
    async with sqlite_db.transaction() as session:
        rows = (await session.exec(select(OutboxMessage))).all()
    assert sorted(row.event_id for row in rows) == sorted(event.id for event in announced)


async def test_a_changed_account_is_announced_again(sqlite_db: Database) -> None:
    """Re-importing an account counts as an update and announces its new state."""
    async with sqlite_db.transaction() as session:
        await import_accounts(session, parse_accounts(json.dumps(ACCOUNT)), correlation_id="a")
    changed = json.dumps({**ACCOUNT, "consent": ["withhold_portal"]})
    async with sqlite_db.transaction() as session:
        result = await import_accounts(session, parse_accounts(changed), correlation_id="b")
    assert (result.created, result.updated) == (0, 1)
    [message] = result.staged
    event = CloudEvent[PatientAccountUpdated].model_validate_json(message.body)
    assert event.data.withhold_portal is True


async def test_item_14_an_import_keeps_the_patients_newer_unsubscribe_and_says_so(
    sqlite_db: Database,
) -> None:
    """Issue 12 item 14: after the patient's one-click unsubscribe, an import saying "on"
    without a newer timestamp keeps "off" and reports it; one stating a later change wins."""
    enrolled = {**ACCOUNT, "email_notifications": True}
    async with sqlite_db.transaction() as session:
        await import_accounts(session, parse_accounts(json.dumps(enrolled)), correlation_id="a")
    chosen_at = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
    async with sqlite_db.transaction() as session:
        work = UnitOfWork(service="blume_publisher", session=session, origin=None)
        applied = await apply_unsubscribe(
            work, "bp-0001", str(ACCOUNT["tenant_id"]), chosen_at, correlation_id="unsubscribe-1"
        )
        assert applied is not None
        [announced] = work.staged
        assert json.loads(announced.body)["data"]["email_notifications"] is False
    async with sqlite_db.transaction() as session:
        result = await import_accounts(
            session, parse_accounts(json.dumps(enrolled)), correlation_id="b"
        )
        account = await session.get(PatientAccount, "bp-0001")
        assert account is not None
        assert account.email_notifications is False
    assert result.kept_choices == [
        "bp-0001: kept the patient's own choice of 2026-12-07T04:00Z (email notifications off)"
        " over the file's"
    ]
    newer = {**enrolled, "email_notifications_set_at": "2026-12-07T05:00:00Z"}
    async with sqlite_db.transaction() as session:
        result = await import_accounts(
            session, parse_accounts(json.dumps(newer)), correlation_id="c"
        )
        account = await session.get(PatientAccount, "bp-0001")
        assert account is not None
        assert account.email_notifications is True
    assert result.kept_choices == []
