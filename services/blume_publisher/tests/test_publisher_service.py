"""blume_publisher through the real pipeline on SQLite: publish, dedupe entries, withhold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.envelope import CloudEvent
from blume_publisher.accounts import import_accounts, parse_accounts
from blume_publisher.models import RecordEntry
from blume_publisher.service import build
from blume_runtime.app import Runtime
from blume_runtime.db import Database
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings
from blume_runtime.transport import OutgoingMessage
from sqlmodel import select

REQUESTED = json.loads((EXAMPLES_DIR / "share.blume.requested.json").read_text())
ACCOUNT = {
    "blume_patient_id": "bp-0001",
    "tenant_id": "demo-hospital",
    "mrn": "MRN-0001",
    "email": "jane@mail.example",
    "locale": "fr-CA",
    "email_notifications": False,
    "status": "active",
    "consent": [],
}


class Outcomes:
    def __init__(self) -> None:
        self.events: list[CloudEvent[Any]] = []
        self.service = Service("outcomes")
        self.service.handles("share.blume.published")(self.record)
        self.service.handles("share.blume.withheld")(self.record)

    async def record(self, event: CloudEvent[Any], _ctx: HandlerContext) -> None:
        self.events.append(event)


async def run(db: Database, tmp_path: Path, *events: dict[str, Any], **account: Any) -> Outcomes:
    async with db.transaction() as session:
        await import_accounts(
            session, parse_accounts(json.dumps({**ACCOUNT, **account})), correlation_id="test"
        )
    outcomes = Outcomes()
    settings = Settings(state_dir=tmp_path)
    runtime = Runtime(settings, [build(settings), outcomes.service], db)
    await runtime.start()
    try:
        for event in events:
            body = json.dumps(event).encode()
            await runtime.publish(OutgoingMessage(event["type"], body, event["id"]))
            await runtime.wait_until_idle()
    finally:
        await runtime.stop()
    return outcomes


async def stored_entries(db: Database) -> list[RecordEntry]:
    async with db.transaction() as session:
        return list((await session.exec(select(RecordEntry))).all())


async def test_publishes_one_entry_and_carries_the_preference(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """One entry; the published event carries the account's address, locale and preference."""
    outcomes = await run(sqlite_db, tmp_path, REQUESTED)
    [published] = outcomes.events
    assert published.type == "share.blume.published"
    assert published.data.email_notifications is False
    assert published.data.locale == "fr-CA"
    assert published.data.patient_email == "jane@mail.example"
    [entry] = await stored_entries(sqlite_db)
    assert entry.entry_id == published.data.entry_id


async def test_same_study_twice_is_one_entry(sqlite_db: Database, tmp_path: Path) -> None:
    """A second share of the same study for the same patient reuses the entry."""
    again = {
        **REQUESTED,
        "id": "another-event",
        "data": {**REQUESTED["data"], "share_id": "shr_" + "c" * 32},
    }
    outcomes = await run(sqlite_db, tmp_path, REQUESTED, again)
    assert [event.data.newly_published for event in outcomes.events] == [True, False]
    assert len({event.data.entry_id for event in outcomes.events}) == 1
    assert len(await stored_entries(sqlite_db)) == 1


async def test_consent_changed_after_acceptance_is_honoured(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """The publisher decides on the account as it is when publishing, not when accepted."""
    outcomes = await run(sqlite_db, tmp_path, REQUESTED, consent=["withhold_portal"])
    [withheld] = outcomes.events
    assert withheld.type == "share.blume.withheld"
    assert withheld.data.reason == "consent_directive"
    assert await stored_entries(sqlite_db) == []


async def test_account_of_another_tenant_is_not_used(sqlite_db: Database, tmp_path: Path) -> None:
    """An account id from another tenant is treated as no account at all."""
    outcomes = await run(sqlite_db, tmp_path, REQUESTED, tenant_id="another-hospital")
    [withheld] = outcomes.events
    assert withheld.data.reason == "patient_not_enrolled"
    assert await stored_entries(sqlite_db) == []
