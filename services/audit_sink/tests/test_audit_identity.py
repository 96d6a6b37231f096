"""Who published what, in the audit store: refused events as security records, requesters
by their verified broker user, broken requests under their stand-in envelope."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from blume_audit_sink.export import audit_event
from blume_audit_sink.sealer import pending_count
from blume_audit_sink.verify import verify
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.audit_catalog import UNTRUSTED_PRODUCER_TYPE
from blume_contracts.audit_entry import SECURITY_CHAIN
from blume_runtime.db import Database
from blume_runtime.testing import FakeDelivery
from blume_runtime.transport import DeadLetterCause
from blume_runtime.worker import Worker

from .conftest import request_data
from .test_audit_service import stored_records, worker

__all__ = ["worker"]  # the fixture, used by name


async def sealed(db: Database) -> None:
    """Wait for the worker's own sealer to chain what was staged (a second sealer racing it
    on SQLite could find the database locked)."""
    for _ in range(200):
        async with db.transaction() as session:
            if await pending_count(session) == 0:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the sealer left events staged")


FORGED = {
    **json.loads((EXAMPLES_DIR / "share.blume.published.json").read_text())["data"],
    "patient_email": "victim@attacker.example",
}


async def test_a_forged_event_is_recorded_as_a_security_event_never_as_genuine(
    worker: Worker, sqlite_db: Database, make_event: Any
) -> None:
    """share.blume.published from a user that is not the publisher's: dead-lettered, and the
    store holds one security record (claims and publisher, none of the data) in the
    security chain; a redelivery adds nothing; the chain verifies."""
    forged = make_event("share.blume.published", FORGED, tenant="demo-hospital")
    first = FakeDelivery.of(forged, producer="rogue")
    again = FakeDelivery.of(forged, producer="rogue")
    await worker(first)
    await worker(again)
    await sealed(sqlite_db)

    assert [first.cause, again.cause] == [DeadLetterCause.UNTRUSTED_PRODUCER] * 2
    records = await stored_records(sqlite_db)
    assert [(r.chain_id, r.event_type) for r in records] == [
        (SECURITY_CHAIN, UNTRUSTED_PRODUCER_TYPE)
    ]
    [record] = records
    assert record.event_id != forged.id
    assert record.outcome == "8"
    assert json.loads(record.payload) == {
        "cause": "untrusted_producer",
        "refusal": "not_a_producer_of_this_type",
        "claimed_type": "share.blume.published",
        "claimed_source": forged.source,
        "claimed_id": forged.id,
        "claimed_tenant": "demo-hospital",
        "producer": "rogue",
    }
    assert "victim@attacker.example" not in record.payload + (record.agents or "")
    async with sqlite_db.transaction() as session:
        assert (await verify(session)).ok


async def test_the_genuine_event_is_still_recorded_after_a_forgery_of_its_id(
    worker: Worker, sqlite_db: Database, make_event: Any
) -> None:
    """A forger who uses a genuine event's id cannot keep that event out of the store."""
    event = make_event("share.blume.published", FORGED, tenant="demo-hospital")
    await worker(FakeDelivery.of(event, producer=None))
    genuine = FakeDelivery.of(event)
    await worker(genuine)
    await sealed(sqlite_db)
    assert genuine.settlement == "ack"
    records = await stored_records(sqlite_db)
    assert sorted(r.event_type for r in records) == [
        "security.untrusted_producer",
        "share.blume.published",
    ]


async def test_an_outside_request_names_its_verified_publisher_as_requester(
    worker: Worker, sqlite_db: Database, make_event: Any
) -> None:
    """study.send.requested from the upstream client's broker user: recorded, with that user
    as the requester's identity."""
    request = make_event("study.send.requested", request_data(), tenant="demo-hospital")
    await worker(FakeDelivery.of(request, producer="omegaai"))
    await sealed(sqlite_db)
    [record] = await stored_records(sqlite_db)
    agents = json.loads(record.agents or "[]")
    assert {"role": "requester", "broker_user": "omegaai"} in agents
    exported_ids = [agent.who.identifier.value for agent in audit_event(record).agent or []]
    assert "omegaai" in exported_ids


async def test_a_request_with_a_broken_envelope_is_recorded_under_its_stand_in(
    worker: Worker, sqlite_db: Database, make_event: Any
) -> None:
    """A request whose tenantid is unusable is kept in the ``_unknown`` chain, as the
    dispatcher's rejection of it is."""
    request = make_event("study.send.requested", request_data(), tenant="demo-hospital")
    document = json.loads(request.model_dump_json())
    document["tenantid"] = "t" * 300
    delivery = FakeDelivery(json.dumps(document).encode(), producer="omegaai")
    await worker(delivery)
    await sealed(sqlite_db)
    assert delivery.settlement == "ack"
    [record] = await stored_records(sqlite_db)
    assert (record.chain_id, record.event_id) == ("_unknown", request.id)
