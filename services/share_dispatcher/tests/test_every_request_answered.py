"""Every study.send.requested that parses as a CloudEvent gets exactly one answer.

On real PostgreSQL, where a value longer than its column fails the transaction (SQLite
would store it): over-long and odd envelope attributes and data fields each get a reason
code, never a crash, and the rejection itself carries a valid envelope (issue 8, defect 4).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from blume_contracts.envelope import LenientEnvelope, RawEvent, Token
from blume_contracts.ids import share_id_for
from blume_runtime.db import Database
from blume_runtime.outbox import OutboxRelay
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeDelivery, RecordingTransport
from blume_runtime.transport import DeadLetterCause
from blume_runtime.worker import Worker
from blume_share_dispatcher.models import Share, ShareState
from blume_share_dispatcher.service import build
from pydantic import TypeAdapter

from .test_dispatcher_service import EXAMPLE

pytestmark = pytest.mark.integration
OUTCOMES = ("share.rejected", "share.accepted")
_TOKEN: TypeAdapter[str] = TypeAdapter(Token)

Change = Callable[[dict[str, Any]], None]


def at(path: str, value: Any) -> Change:
    """Set ``data.<path>`` (dotted) to ``value``."""

    def change(document: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = document
        for name in parents:
            target = target[name]
        target[leaf] = value

    return change


def both(*changes: Change) -> Change:
    def change(document: dict[str, Any]) -> None:
        for each in changes:
            each(document)

    return change


def drop(name: str) -> Change:
    return lambda document: document.pop(name)


LONG = "x" * 10_000
# (name, change, expected reason); every one must be answered by share.rejected.
REJECTED: list[tuple[str, Change, str]] = [
    (
        "tenantid 100 chars, broken data",
        both(at("tenantid", "t" * 100), at("data.recipient.email", "not-an-address")),
        "invalid_recipient_email",
    ),
    ("tenantid 100 chars, valid data", at("tenantid", "t" * 100), "tenant_mismatch"),
    ("tenantid 256 chars", at("tenantid", "t" * 256), "tenant_mismatch"),
    ("tenantid 300 chars", at("tenantid", "t" * 300), "invalid_envelope"),
    ("tenantid with a newline", at("tenantid", "demo\nhospital"), "invalid_envelope"),
    ("tenantid empty", at("tenantid", ""), "invalid_envelope"),
    ("tenantid a number", at("tenantid", 7), "invalid_envelope"),
    ("tenantid missing", drop("tenantid"), "invalid_envelope"),
    ("correlationid 300 chars", at("correlationid", "c" * 300), "invalid_envelope"),
    ("correlationid missing", drop("correlationid"), "invalid_envelope"),
    ("time garbage", at("time", "yesterday"), "invalid_envelope"),
    ("time without a zone", at("time", "2026-11-28T14:00:00"), "invalid_envelope"),
    ("time missing", drop("time"), "invalid_envelope"),
    ("datacontenttype text/xml", at("datacontenttype", "text/xml"), "invalid_envelope"),
    ("extra attribute", at("x" * 300, "y"), "invalid_envelope"),
    ("method 100 chars", at("data.method", "m" * 100), "unknown_method"),
    ("tenant_id 10k chars", at("data.tenant_id", LONG), "unknown_tenant"),
    ("recipient name 10k", at("data.recipient.name", LONG), "invalid_recipient_name"),
    ("recipient email 10k", at("data.recipient.email", LONG), "invalid_recipient_email"),
    ("sender user_id 10k", at("data.sender.user_id", LONG), "invalid_sender"),
    ("sender email a list", at("data.sender.email", [LONG]), "invalid_sender"),
    ("study uid 10k", at("data.study.study_instance_uid", LONG), "invalid_study_uid"),
    ("accession 10k", at("data.study.accession_number", LONG), "invalid_study"),
    ("description 10k", at("data.study.description", LONG), "invalid_study"),
    ("mrn 10k", at("data.study.patient.mrn", LONG), "invalid_patient"),
    ("patient name 10k", at("data.study.patient.name", LONG), "invalid_patient"),
    ("message 10k", at("data.message", LONG), "message_too_long"),
    ("locale 10k", at("data.locale", LONG), "unsupported_locale"),
    ("expiry a word", at("data.expires_in_hours", "seventy-two"), "invalid_expiry"),
    ("expiry huge", at("data.expires_in_hours", 10**30), "expiry_exceeds_policy"),
    ("unknown field 10k name", at("data." + "k" * 10_000, 1), "malformed_request"),
    ("data null", at("data", None), "malformed_request"),
    ("data a string", at("data", LONG), "malformed_request"),
    ("data missing", drop("data"), "invalid_envelope"),
]
# Not a CloudEvent even leniently (no usable dedupe key or type): dead-lettered, malformed.
UNANSWERABLE: list[tuple[str, Change]] = [
    ("specversion 0.3", at("specversion", "0.3")),
    ("id 300 chars", at("id", "i" * 300)),
    ("source missing", drop("source")),
]


def hostile(name: str, change: Change) -> bytes:
    document = json.loads(json.dumps(EXAMPLE))
    document["id"] = f"req-{abs(hash(name))}"
    change(document)
    return json.dumps(document).encode()


@pytest.fixture
async def postgres(migrated_database_url: str) -> AsyncIterator[Database]:
    database = Database(migrated_database_url)
    yield database
    await database.dispose()


class Dispatcher:
    """The dispatcher's worker on PostgreSQL, recording what it publishes."""

    def __init__(self, db: Database, tmp_path: Path) -> None:
        settings = Settings(state_dir=tmp_path)
        self.transport = RecordingTransport()
        self.worker = Worker(build(settings), db, OutboxRelay(db, self.transport), settings)

    async def deliver(self, body: bytes) -> FakeDelivery:
        delivery = FakeDelivery(body, routing_key="study.send.requested", producer="omegaai")
        await self.worker(delivery)
        return delivery

    def outcomes(self) -> list[dict[str, Any]]:
        return [event for event in self.transport.events() if event["type"] in OUTCOMES]


async def test_a_100_character_tenantid_with_broken_data_is_rejected(
    postgres: Database, tmp_path: Path
) -> None:
    """The reported case: rejected once, with the data's reason code, stored with its tenant."""
    dispatcher = Dispatcher(postgres, tmp_path)
    body = hostile(*REJECTED[0][:2])
    first = await dispatcher.deliver(body)
    again = await dispatcher.deliver(body)
    assert (first.settlement, again.settlement) == ("ack", "ack")
    [rejected] = dispatcher.outcomes()
    assert rejected["type"] == "share.rejected"
    assert rejected["data"]["reason"] == "invalid_recipient_email"
    assert rejected["tenantid"] == "t" * 100
    request = RawEvent.model_validate_json(body)
    async with postgres.transaction() as session:
        share = await session.get(Share, share_id_for(request))
    assert share is not None
    assert (share.state, share.tenant_id) == (ShareState.REJECTED, "t" * 100)


async def test_every_hostile_request_gets_exactly_one_valid_answer(
    postgres: Database, tmp_path: Path
) -> None:
    """Each case: acked, one share.rejected with the expected reason, a valid envelope whose
    tenant is the request's (or ``_unknown``) and whose correlation id is the request's (or
    its id); delivered again, no second answer."""
    dispatcher = Dispatcher(postgres, tmp_path)
    wrong: list[str] = []
    for name, change, reason in REJECTED:
        body = hostile(name, change)
        before = len(dispatcher.outcomes())
        for _ in range(2):
            delivery = await dispatcher.deliver(body)
            if delivery.settlement != "ack":
                wrong.append(f"{name}: {delivery.settlement} {delivery.cause}")
        answers = dispatcher.outcomes()[before:]
        if [(a["type"], a["data"].get("reason")) for a in answers] != [("share.rejected", reason)]:
            wrong.append(f"{name}: {[(a['type'], a['data'].get('reason')) for a in answers]}")
            continue
        [answer] = answers
        RawEvent.model_validate(answer)
        sent = json.loads(body)
        lenient = LenientEnvelope.model_validate(sent)
        assert answer["tenantid"] == _usable(sent.get("tenantid"), "_unknown"), name
        assert answer["correlationid"] == _usable(sent.get("correlationid"), lenient.id), name
        assert len(answer["data"]["message"]) <= 500
        assert LONG not in json.dumps(answer), name
    assert wrong == []


async def test_a_request_that_is_not_a_cloudevent_even_leniently_is_dead_lettered(
    postgres: Database, tmp_path: Path
) -> None:
    """Without a usable specversion, id or source there is no one to answer: malformed."""
    dispatcher = Dispatcher(postgres, tmp_path)
    for name, change in UNANSWERABLE:
        delivery = await dispatcher.deliver(hostile(name, change))
        assert delivery.cause is DeadLetterCause.MALFORMED, name
    assert dispatcher.outcomes() == []


def _usable(value: Any, fallback: str) -> str:
    try:
        return _TOKEN.validate_python(value)
    except ValueError:
        return fallback
