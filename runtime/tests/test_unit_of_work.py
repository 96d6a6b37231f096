"""The one unit of work: outbox rows in the transaction, ids derived or random, relay after."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from blume_contracts.events import ShareAccepted, ShareCompleted
from blume_contracts.serialisation import event_body
from blume_runtime.db import Database, OutboxMessage
from blume_runtime.testing import RecordingTransport
from blume_runtime.transport import OutgoingMessage
from blume_runtime.unit_of_work import UnitOfWork, UnitsOfWork
from sqlmodel import select

from runtime.tests.pipeline_support import NOW, SHARE, accepted_event


def completed() -> ShareCompleted:
    return ShareCompleted(share_id=SHARE, method="external_link", completed_at=NOW)


class _Relay:
    def __init__(self, transport: RecordingTransport) -> None:
        self.transport = transport

    async def publish_committed(self, messages: Sequence[OutgoingMessage]) -> None:
        for message in messages:
            await self.transport.publish(message)


async def test_ids_derive_from_the_originating_message(db: Database) -> None:
    """Two runs of the same handling emit the same ids; another scope or a second emit differ."""
    origin = accepted_event("evt-7")
    ids: list[list[str]] = []
    for scope in ("", "", "retry:smtp_unavailable"):
        async with db.transaction() as session:
            work = UnitOfWork(service="probe", session=session, origin=origin, scope=scope)
            first = work.emit("share.completed", completed())
            second = work.emit("share.completed", completed())
            ids.append([first.id, second.id])
            await session.rollback()
    assert ids[0] == ids[1]
    assert ids[0][0] != ids[0][1]
    assert ids[2][0] not in ids[0]
    assert first.tenantid == origin.tenantid
    assert first.correlationid == origin.correlationid


async def test_without_an_origin_every_emit_is_a_new_event(db: Database) -> None:
    """With no originating message two identical emits are two events with random ids."""
    async with db.transaction() as session:
        work = UnitOfWork(service="access_gateway", session=session)
        one = work.emit("share.completed", completed(), tenantid="t", correlationid="c")
        two = work.emit("share.completed", completed(), tenantid="t", correlationid="c")
    assert one.id != two.id
    assert one.source == "/blume-share/access_gateway"


async def test_without_an_origin_the_tenant_must_be_named(db: Database) -> None:
    """An event nobody can attribute to a tenant is refused before it reaches the outbox."""
    async with db.transaction() as session:
        work = UnitOfWork(service="access_gateway", session=session)
        with pytest.raises(TypeError):
            work.emit("share.completed", completed())


async def test_data_must_match_the_contract_of_the_type(db: Database) -> None:
    """Emitting data of another event type is a programming error, refused at once."""
    async with db.transaction() as session:
        work = UnitOfWork(service="probe", session=session, origin=accepted_event())
        with pytest.raises(TypeError):
            work.emit("share.completed", ShareAccepted(share_id=SHARE, method="external_link"))


async def test_committed_events_are_in_the_outbox_and_then_relayed(db: Database) -> None:
    """The outbox row holds the very bytes the relay publishes, only after commit."""
    transport = RecordingTransport()
    units = UnitsOfWork("access_gateway", db, _Relay(transport))
    async with units.unit_of_work() as work:
        event = work.emit("share.completed", completed(), tenantid="t", correlationid="c")
        assert transport.published == []
    (message,) = transport.published
    assert message.body == event_body(event)
    async with db.transaction() as session:
        (row,) = (await session.exec(select(OutboxMessage))).all()
    assert row.body == message.body
    assert row.event_id == event.id


async def test_a_refusing_broker_leaves_the_rows_for_the_sweep(db: Database) -> None:
    """A relay failure after commit is swallowed: the rows stay in the outbox."""
    transport = RecordingTransport()
    transport.fail = True
    units = UnitsOfWork("access_gateway", db, _Relay(transport))
    async with units.unit_of_work() as work:
        work.emit("share.completed", completed(), tenantid="t", correlationid="c")
    async with db.transaction() as session:
        assert len((await session.exec(select(OutboxMessage))).all()) == 1
