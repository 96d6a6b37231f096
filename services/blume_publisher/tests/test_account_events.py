"""Account changes leave blume_publisher only as ``patient.account.updated`` events, staged in
the outbox of the import's own transaction."""

from __future__ import annotations

import json

from blume_contracts.envelope import CloudEvent
from blume_contracts.events import PatientAccountUpdated
from blume_publisher import import_accounts, parse_accounts
from blume_runtime.db import Database, OutboxMessage
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
