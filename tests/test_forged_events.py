"""A forged internal event makes us do nothing, on the embedded default (SQLite, mail drop).

Issue 8, defect 5: a ``share.blume.published`` with a chosen ``patient_email``, published by
anyone who can publish on ``blume.share``, made the notifier email that address and the
audit sink append the event as genuine. Here it reaches every consumer of its type, from a
broker user that is not the publisher's (and from none at all).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from blume_audit_sink import service as audit_sink
from blume_audit_sink.models import AuditRecord
from blume_audit_sink.sealer import pending_count
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_notifier import service as notifier
from blume_runtime.db import Database
from blume_runtime.outbox import OutboxRelay
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeDelivery, RecordingTransport
from blume_runtime.transport import DeadLetterCause
from blume_runtime.worker import Worker
from blume_share_dispatcher import service as dispatcher
from pydantic import SecretStr
from sqlmodel import select

CHOSEN_ADDRESS = "phish-target@attacker.example"


def forged_publication(event_id: str = "forged-1") -> dict[str, Any]:
    """The contract's example publication, as a forger would send it: its own source and
    id, and an address of its choosing."""
    event = json.loads((EXAMPLES_DIR / "share.blume.published.json").read_text())
    event.update(id=event_id, source="/evil/forged")
    event["data"]["patient_email"] = CHOSEN_ADDRESS
    return dict(event)


@pytest.mark.parametrize("producer", ["rogue-client", None], ids=["other-user", "no-user"])
async def test_a_forged_publication_sends_nothing_and_is_audited_as_a_security_event(
    sqlite_db: Database, state_dir: Path, producer: str | None
) -> None:
    """Every consumer of share.blume.published dead-letters it as ``untrusted_producer``:
    no email in the mail drop, nothing published, and the audit store holds a security
    record naming the publisher instead of the event."""
    settings = Settings(state_dir=state_dir, database_url=SecretStr(sqlite_db.url))
    services = [notifier.build(settings), dispatcher.build(settings), audit_sink.build(settings)]
    transport = RecordingTransport()
    for service in services:  # as the runtime starts them: the sink's sealer
        for component in service.components:
            await component.start()
    try:
        for service in services:
            delivery = FakeDelivery(json.dumps(forged_publication()).encode(), producer=producer)
            await Worker(service, sqlite_db, OutboxRelay(sqlite_db, transport), settings)(delivery)
            assert delivery.cause is DeadLetterCause.UNTRUSTED_PRODUCER, service.name
        for _ in range(200):  # the sink's own sealer chains the security record
            async with sqlite_db.transaction() as session:
                if await pending_count(session) == 0:
                    break
            await asyncio.sleep(0.05)
    finally:
        for service in services:
            for component in service.components:
                await component.stop()

    mail = settings.mail_drop_dir
    assert not mail.exists() or list(mail.iterdir()) == []
    assert transport.published == []
    async with sqlite_db.transaction() as session:
        records = (await session.exec(select(AuditRecord))).all()
    assert [(r.chain_id, r.event_type) for r in records] == [
        ("_security", "security.untrusted_producer")
    ]
    payload = json.loads(records[0].payload)
    assert (payload["claimed_type"], payload["claimed_source"], payload["producer"]) == (
        "share.blume.published",
        "/evil/forged",
        producer,
    )
    assert CHOSEN_ADDRESS not in records[0].payload


async def test_a_forgery_that_is_a_fresh_databases_first_message_is_still_recorded(
    sqlite_db: Database, state_dir: Path
) -> None:
    """A consumer whose database finds out before its first transaction whether it stages
    audit rows (as every service's does) records the security record of a forgery that is
    the very first message it handles."""
    settings = Settings(state_dir=state_dir, database_url=SecretStr(sqlite_db.url))
    fresh = Database(sqlite_db.url, stages_audit=None)
    try:
        delivery = FakeDelivery(json.dumps(forged_publication("forged-first")).encode())
        worker = Worker(
            notifier.build(settings), fresh, OutboxRelay(fresh, RecordingTransport()), settings
        )
        await worker(delivery)
        assert delivery.cause is DeadLetterCause.UNTRUSTED_PRODUCER
        async with sqlite_db.transaction() as session:
            assert await pending_count(session) == 1
    finally:
        await fresh.dispose()
