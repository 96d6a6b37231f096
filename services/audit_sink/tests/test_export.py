"""Exports: a FHIR R4 Bundle of AuditEvents that validates, shaped after IHE BALP; CSV; JSONL."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from blume_audit_sink.append import append_entries
from blume_audit_sink.export import (
    CSV_COLUMNS,
    csv_text,
    fhir_bundle,
    fhir_json,
    jsonl_line,
    records_matching,
)
from blume_audit_sink.hashing import hashed_fields, record_hash
from blume_audit_sink.models import AuditRecord
from blume_audit_sink.search import RecordFilter
from blume_contracts.audit_entry import prepare
from blume_contracts.serialisation import canonical_json
from blume_runtime.db import Database
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

DCM = "http://dicom.nema.org/resources/ontology/DCM"


@pytest.fixture
async def records(sqlite_db: Database, life: Any, make_event: Any) -> list[AuditRecord]:
    """One share's whole life, a rejected request and an event of a type nobody knows yet."""
    events = [
        *life(),
        make_event(
            "share.rejected",
            {"share_id": "shr_" + "e" * 32, "reason": "invalid_recipient_email", "message": "x"},
            tenant="demo-hospital",
        ),
        make_event(
            "share.hologram.projected", {"share_id": "shr_" + "e" * 32}, tenant="demo-hospital"
        ),
    ]
    for event in events:
        async with sqlite_db.transaction() as session:
            await append_entries(session, [prepare(event)])
    async with sqlite_db.transaction() as session:
        return [r async for r in records_matching(session, RecordFilter())]


def parsed_events(records: list[AuditRecord]) -> dict[str, AuditEvent]:
    """The exported bundle, parsed back from JSON and validated by fhir.resources (R4B)."""
    bundle = Bundle.model_validate_json(fhir_json(fhir_bundle(records)))
    assert bundle.type == "collection"
    events: dict[str, AuditEvent] = {}
    for entry in bundle.entry or []:
        resource = entry.resource
        assert isinstance(resource, AuditEvent)
        assert entry.fullUrl == f"urn:uuid:{resource.id}"
        event_type = next(
            c.code for c in resource.subtype or [] if c.system == "urn:blume-share:event-type"
        )
        events[str(event_type)] = resource
    return events


def test_the_bundle_validates_and_holds_one_audit_event_per_record(
    records: list[AuditRecord],
) -> None:
    """Every record becomes one valid R4 AuditEvent with agents, a source and entities."""
    events = parsed_events(records)
    assert len(events) == len(records) == 8
    for event in events.values():
        assert event.agent
        assert event.source.observer is not None
        assert event.entity
        assert event.recorded is not None
        assert event.outcome in {"0", "4", "8", "12"}


def test_a_sent_share_is_a_privacy_disclosure(records: list[AuditRecord]) -> None:
    """The email with the link: DCM 110106 Export, ISO 21089 disclose, action R, purpose TREAT."""
    disclosure = parsed_events(records)["share.notification.sent"]
    assert (disclosure.type.system, disclosure.type.code) == (DCM, "110106")
    assert ("http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle", "disclose") in {
        (c.system, c.code) for c in disclosure.subtype or []
    }
    assert disclosure.action == "R"
    assert disclosure.purposeOfEvent[0].coding[0].code == "TREAT"
    roles = {agent.type.text: agent for agent in disclosure.agent if agent.type.text}
    assert roles["recipient"].who.identifier.value == "mailto:bob.jones@clinic.example"
    assert roles["recipient"].type.coding[0].code == "110152"
    patient = next(e for e in disclosure.entity if e.role and e.role.code == "1")
    assert patient.what.identifier.value == "MRN-0001"
    study = next(e for e in disclosure.entity if e.role and e.role.code == "3")
    assert (
        study.what.identifier.value == "urn:oid:1.2.840.113619.2.55.3.604688119.868.1234567890.123"
    )


def test_an_access_is_a_read_with_the_clients_address(records: list[AuditRecord]) -> None:
    """The link access: rest/read, action R, the client as requestor with IP and user agent."""
    access = parsed_events(records)["share.link.accessed"]
    assert (access.type.code, access.action) == ("rest", "R")
    assert ("http://hl7.org/fhir/restful-interaction", "read") in {
        (c.system, c.code) for c in access.subtype or []
    }
    (client,) = [agent for agent in access.agent if agent.requestor]
    assert client.network.address == "203.0.113.7"
    assert client.extension[0].valueString == "Mozilla/5.0"


def test_failures_and_unknown_types_keep_their_codes(records: list[AuditRecord]) -> None:
    """A rejection is a minor failure with its reason code; an unknown type the generic code."""
    events = parsed_events(records)
    rejected = events["share.rejected"]
    assert (rejected.outcome, rejected.outcomeDesc) == (
        "4",
        "share.rejected: invalid_recipient_email",
    )
    unknown = events["share.hologram.projected"]
    assert (unknown.type.system, unknown.type.code) == (
        "urn:blume-share:audit-event-type",
        "unclassified",
    )


def test_no_secret_reaches_the_fhir_export(records: list[AuditRecord]) -> None:
    """The sealed link was fingerprinted before storage, so no export can carry it."""
    assert "gAAAAABn-sealed-link" not in fhir_json(fhir_bundle(records))


def test_csv_and_jsonl_carry_every_column_and_re_verify(records: list[AuditRecord]) -> None:
    """The machine exports keep values exactly: each line's hash can be recomputed from it."""
    rows = list(csv.DictReader(io.StringIO(csv_text(records))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(row["seq"]) for row in rows] == [r.seq for r in records]
    for record, line in zip(records, (json.loads(jsonl_line(r)) for r in records), strict=True):
        assert line["hash"] == record.hash
        # payload and agents are stored as the canonical JSON of what the line shows.
        fields = {
            **line,
            "payload": canonical_json(line["data"]),
            "agents": canonical_json(line["agents"]),
        }
        assert record_hash(line["prev_hash"], hashed_fields(fields)) == record.hash
