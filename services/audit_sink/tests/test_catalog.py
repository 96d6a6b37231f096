"""The event catalog and what a record holds: codes, actions, outcomes, agents, patient."""

from __future__ import annotations

import json
from typing import Any

import pytest
from blume_audit_sink.append import append_entries
from blume_audit_sink.models import AuditRecord
from blume_contracts import audit_catalog as catalog
from blume_contracts.audit_entry import prepare
from blume_contracts.registry import EVENTS
from blume_runtime.db import Database
from sqlmodel import col, select

GATEWAY_TYPES = (
    "share.link.opened",
    "share.otp.requested",
    "share.link.accessed",
    "share.link.denied",
    "share.revoked",
    "share.blume.viewed",
)


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_every_registered_event_type_has_its_own_entry(event_type: str) -> None:
    """No event type on the exchange falls back to the generic code."""
    assert event_type in catalog.CATALOG
    assert catalog.classify(event_type) is not catalog.GENERIC


def test_the_web_gateways_events_are_classified_in_advance() -> None:
    """Accesses are reads of DICOM instances; denials are failed authentications."""
    assert set(GATEWAY_TYPES) <= set(catalog.CATALOG)
    accessed = catalog.classify("share.link.accessed")
    assert (accessed.code.code, accessed.action, accessed.access) == ("110103", "R", True)
    denied = catalog.classify("share.link.denied")
    assert (denied.code.code, denied.outcome) == ("110114", catalog.Outcome.MINOR_FAILURE)


def test_an_unknown_type_gets_the_generic_code() -> None:
    """A type the table does not know is recorded, with a code that says so."""
    unknown = catalog.classify("share.hologram.projected")
    assert unknown is catalog.GENERIC
    assert unknown.code.token == "urn:blume-share:audit-event-type|unclassified"
    assert (unknown.action, unknown.outcome) == ("E", "0")


def test_disclosures_are_the_handovers_and_accesses_the_reads() -> None:
    """The accounting and the FHIR export rest on these two lists."""
    assert catalog.disclosure_types() == ["share.blume.published", "share.notification.sent"]
    reads = sorted(name for name in catalog.CATALOG if catalog.classify(name).access)
    assert reads == [
        "share.blume.viewed",
        "share.images.exported",
        "share.images.viewed",
        "share.link.accessed",
    ]


@pytest.mark.parametrize(
    ("event_type", "outcome"),
    [
        ("share.rejected", "4"),
        ("share.failed", "8"),
        ("share.notification.failed", "8"),
        ("share.blume.withheld", "4"),
        ("share.completed", "0"),
    ],
)
def test_failures_carry_their_outcome(event_type: str, outcome: str) -> None:
    """FHIR R4 outcome codes: 0 success, 4 minor failure, 8 serious failure."""
    assert catalog.classify(event_type).outcome.value == outcome


def test_agents_are_read_from_the_data(request_body: Any) -> None:
    """Sender, recipient and client come out of the data with their roles, in a fixed order."""
    data = {
        **request_body(),
        "client": {"client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11)"},
    }
    assert catalog.agents_of(data) == [
        {
            "role": "sender",
            "user_id": "u-123",
            "name": "Dr. Alice Smith",
            "email": "alice@demo.example",
        },
        {"role": "recipient", "name": "Dr. Bob Jones", "email": "bob.jones@clinic.example"},
        {"role": "client", "client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11)"},
    ]


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "text",
        {"sender": "not an object", "recipient": 7},
        {"client": {"client_ip": "x\x00y"}},
    ],
)
def test_agents_of_broken_data_are_empty(data: Any) -> None:
    """Whatever the data holds, reading agents never fails; non-text values are ignored."""
    assert catalog.agents_of(data) == []


def test_the_blume_path_names_the_patient_as_recipient() -> None:
    """A Blume publication goes to the patient: the patient's email is the recipient address."""
    agents = catalog.agents_of(
        {"share_id": "shr_x", "blume_patient_id": "bp-0001", "patient_email": "Jane@Example.org"}
    )
    assert agents == [
        {"role": "patient", "blume_patient_id": "bp-0001", "email": "Jane@Example.org"}
    ]
    assert catalog.recipient_email_of(agents) == "jane@example.org"
    assert catalog.patient_mrn_of({"study": {"patient_mrn": "MRN-7"}}) == "MRN-7"


def test_a_record_holds_code_action_outcome_agents_patient_and_no_token(life: Any) -> None:
    """A prepared link event: its code, the people, the patient's study, a fingerprint only."""
    events = life()
    issued = prepare(events[2])
    assert issued.event_code == "http://dicom.nema.org/resources/ontology/DCM|110106"
    assert (issued.action, issued.outcome) == ("C", "0")
    assert issued.sender_user_id == "u-123"
    assert issued.recipient_email == "bob.jones@clinic.example"
    assert "gAAAAABn-sealed-link" not in issued.payload
    assert json.loads(issued.payload)["sealed_link"].startswith("sha256:")
    roles = [agent["role"] for agent in json.loads(issued.agents)]
    assert roles == ["sender", "recipient"]


def test_the_request_carries_the_share_id_the_dispatcher_gives_it(
    make_event: Any, request_body: Any
) -> None:
    """The audit sink's share id for a request is the dispatcher's own (one key per share)."""
    from blume_contracts.ids import share_id_for

    request = make_event("study.send.requested", request_body(), tenant="demo-hospital")
    assert prepare(request).share_id == share_id_for(request)


async def test_later_events_inherit_the_shares_patient_and_people(
    sqlite_db: Database, life: Any
) -> None:
    """Accepted, completed and the access carry no MRN; their records get it from the request."""
    events = life(mrn="MRN-0042")
    for event in events:
        async with sqlite_db.transaction() as session:
            await append_entries(session, [prepare(event)])

    async with sqlite_db.transaction() as session:
        records = (await session.exec(select(AuditRecord).order_by(col(AuditRecord.seq)))).all()
    assert {r.patient_mrn for r in records} == {"MRN-0042"}
    assert {r.sender_user_id for r in records} == {"u-123"}
    assert {r.recipient_email for r in records} == {"bob.jones@clinic.example"}
    access = records[-1]
    assert access.event_type == "share.link.accessed"
    assert json.loads(access.agents or "[]") == [
        {"role": "client", "client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0"}
    ]
