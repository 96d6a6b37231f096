"""Exports of the audit trail: FHIR R4 AuditEvent Bundles, CSV and JSON Lines.

The FHIR resources are built with ``fhir.resources.R4B``: the package's default models are
FHIR R5, whose AuditEvent was redesigned; R4B's AuditEvent is R4's element for element, so
what validates here is a valid R4 AuditEvent. They are shaped after IHE BALP (Basic Audit
Log Patterns): each disclosure (an email with a link sent, a study published into a Blume
record) is a PrivacyDisclosure at the source (DCM 110106 Export, subtype ISO 21089
``disclose``, action R, with purpose of use); each access to a shared study is a Read
(``rest`` / ``read``, action R) with the client's address; every other record keeps its
DICOM code. No claim of BALP profile conformance is made in ``meta.profile``.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any, Final

from blume_contracts import audit_catalog as catalog
from blume_runtime.db import as_utc, utcnow
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink.models import AuditRecord
from blume_audit_sink.search import RecordFilter, apply_filter, record_as_json

_IDS: Final = uuid.UUID("3b8f5c1e-9d8a-4d7e-8a43-6f0a3c1d2e71")

AUDIT_EVENT_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION: Final = "http://hl7.org/fhir/restful-interaction"
LIFECYCLE: Final = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
ENTITY_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE: Final = "http://terminology.hl7.org/CodeSystem/object-role"
PARTICIPATION: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_REASON: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SOURCE_TYPE: Final = "http://terminology.hl7.org/CodeSystem/security-source-type"
EVENT_TYPES: Final = "urn:blume-share:event-type"
USER_AGENT_EXTENSION: Final = "urn:blume-share:fhir:extension:user-agent"

_AGENT_TYPES: Final = {
    "sender": ("110153", "Source Role ID"),
    "client": ("110153", "Source Role ID"),
    "requester": ("110153", "Source Role ID"),
    "recipient": ("110152", "Destination Role ID"),
    "patient": ("110152", "Destination Role ID"),
}
_PURPOSES: Final = {catalog.Purpose.TREATMENT: "treatment"}
CSV_COLUMNS: Final = (
    "chain_id",
    "seq",
    "occurred_at",
    "recorded_at",
    "event_type",
    "event_code",
    "action",
    "outcome",
    "event_id",
    "event_source",
    "share_id",
    "correlation_id",
    "patient_mrn",
    "study_uid",
    "sender_user_id",
    "recipient_email",
    "agents",
    "data",
    "hash_version",
    "prev_hash",
    "hash",
)


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def resource_id(record: AuditRecord) -> str:
    """Stable per record, so re-exporting the same record gives the same resource id."""
    return str(uuid.uuid5(_IDS, f"{record.chain_id}\n{record.seq}"))


def _event_code(record: AuditRecord) -> dict[str, str]:
    token = record.event_code or catalog.classify(record.event_type).code.token
    known = catalog.CODES_BY_TOKEN.get(token)
    if known is not None:
        return _coding(known.system, known.code, known.display)
    system, _, code = token.rpartition("|")
    return _coding(system, code)


def _type_and_subtypes(
    record: AuditRecord, kind: catalog.EventClass
) -> tuple[dict[str, str], list[dict[str, str]]]:
    ours = _coding(EVENT_TYPES, record.event_type)
    if kind.access:
        read = _coding(RESTFUL_INTERACTION, "read", "read")
        return _coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation"), [
            read,
            _event_code(record),
            ours,
        ]
    if kind.disclosure:
        disclose = _coding(LIFECYCLE, "disclose", "Disclose Record Lifecycle Event")
        return _coding(catalog.DCM, "110106", "Export"), [disclose, ours]
    return _event_code(record), [ours]


def _agent(agent: dict[str, str], tenant: str, *, requestor: bool) -> dict[str, Any]:
    code, display = _AGENT_TYPES.get(agent["role"], ("110153", "Source Role ID"))
    who: dict[str, Any] = {}
    if "user_id" in agent:
        who["identifier"] = {"system": f"urn:blume-share:user:{tenant}", "value": agent["user_id"]}
    elif "email" in agent:
        who["identifier"] = {"system": "urn:ietf:rfc:3986", "value": f"mailto:{agent['email']}"}
    elif "blume_patient_id" in agent:
        who["identifier"] = {
            "system": "urn:blume-share:blume-patient",
            "value": agent["blume_patient_id"],
        }
    elif "broker_user" in agent:  # an outside request's verified publisher
        who["identifier"] = {"system": "urn:blume-share:broker-user", "value": agent["broker_user"]}
    who["display"] = agent.get("name") or agent["role"]
    resource: dict[str, Any] = {
        "type": {"coding": [_coding(catalog.DCM, code, display)], "text": agent["role"]},
        "who": who,
        "requestor": requestor,
    }
    if "name" in agent:
        resource["name"] = agent["name"]
    if "client_ip" in agent:
        resource["network"] = {"address": agent["client_ip"], "type": "2"}
    if "user_agent" in agent:
        resource["extension"] = [{"url": USER_AGENT_EXTENSION, "valueString": agent["user_agent"]}]
    return resource


def _agents(record: AuditRecord, kind: catalog.EventClass) -> list[dict[str, Any]]:
    custodian = {
        "type": {"coding": [_coding(PARTICIPATION, "CST", "custodian")]},
        "who": {
            "identifier": {"system": "urn:blume-share:tenant", "value": record.chain_id},
            "display": record.chain_id,
        },
        "requestor": False,
    }
    # Who asked: the browser of an access, otherwise the user who shared.
    asking = "client" if kind.access else "sender"
    agents = json.loads(record.agents) if record.agents else []
    return [custodian, *(_agent(a, record.chain_id, requestor=a["role"] == asking) for a in agents)]


def _entities(record: AuditRecord) -> list[dict[str, Any]]:
    system_object = {"coding": [_coding(ENTITY_TYPE, "2", "System Object")]}
    entities: list[dict[str, Any]] = []
    if record.patient_mrn:
        entities.append(
            {
                "what": {
                    "identifier": {
                        "system": f"urn:blume-share:mrn:{record.chain_id}",
                        "value": record.patient_mrn,
                    }
                },
                "type": _coding(ENTITY_TYPE, "1", "Person"),
                "role": _coding(OBJECT_ROLE, "1", "Patient"),
            }
        )
    if record.study_uid:
        entities.append(
            {
                "what": {
                    "identifier": {
                        "system": "urn:dicom:uid",
                        "value": f"urn:oid:{record.study_uid}",
                    }
                },
                "type": system_object["coding"][0],
                "role": _coding(OBJECT_ROLE, "3", "Report"),
                "description": "DICOM Study Instance UID",
            }
        )
    if record.share_id:
        entities.append(
            {
                "what": {
                    "identifier": {"system": "urn:blume-share:share-id", "value": record.share_id}
                },
                "type": system_object["coding"][0],
                "description": "Blume Share share",
            }
        )
    entities.append(
        {
            "what": {
                "identifier": {
                    "system": "urn:blume-share:audit-record",
                    "value": f"{record.chain_id}/{record.seq}",
                }
            },
            "type": system_object["coding"][0],
            "description": "Audit record (hash chain position)",
            "detail": [
                {"type": "event_id", "valueString": record.event_id},
                {"type": "event_source", "valueString": record.event_source},
                {"type": "correlation_id", "valueString": record.correlation_id},
                {"type": "prev_hash", "valueString": record.prev_hash},
                {"type": "hash", "valueString": record.hash},
            ],
        }
    )
    return entities


def audit_event(record: AuditRecord) -> AuditEvent:
    """One record as a FHIR R4 AuditEvent (validated on construction)."""
    kind = catalog.classify(record.event_type)
    event_type, subtypes = _type_and_subtypes(record, kind)
    occurred = as_utc(record.occurred_at).isoformat()
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": resource_id(record),
        "type": event_type,
        "subtype": subtypes,
        "action": record.action or kind.action.value,
        "period": {"start": occurred, "end": occurred},
        "recorded": as_utc(record.recorded_at).isoformat(),
        "outcome": record.outcome or kind.outcome.value,
        "agent": _agents(record, kind),
        "source": {
            "site": record.chain_id,
            "observer": {"display": "Blume Share audit sink"},
            "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
        },
        "entity": _entities(record),
    }
    if kind.purpose is not None:
        resource["purposeOfEvent"] = [
            {"coding": [_coding(ACT_REASON, kind.purpose.value, _PURPOSES[kind.purpose])]}
        ]
    if record.outcome not in (None, catalog.Outcome.SUCCESS.value):
        reason = _failure_reason(record)
        if reason:
            resource["outcomeDesc"] = reason
    return AuditEvent.model_validate(resource)


def _failure_reason(record: AuditRecord) -> str | None:
    """The reason code a failure event carries (never the human message, which may echo PHI)."""
    data = json.loads(record.payload)
    reason = data.get("reason") if isinstance(data, dict) else None
    return f"{record.event_type}: {reason}" if isinstance(reason, str) else None


def fhir_bundle(records: Iterable[AuditRecord], *, timestamp: datetime | None = None) -> Bundle:
    entries = []
    for record in records:
        event = audit_event(record)
        entries.append({"fullUrl": f"urn:uuid:{event.id}", "resource": event})
    return Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "type": "collection",
            "timestamp": as_utc(timestamp or utcnow()).isoformat(),
            "entry": entries,
        }
    )


def fhir_json(bundle: Bundle) -> str:
    return bundle.model_dump_json(exclude_none=True)


async def records_matching(
    session: AsyncSession, wanted: RecordFilter, *, batch: int = 1000
) -> AsyncIterator[AuditRecord]:
    """Every matching record, by occurrence time, streamed (exports have no page limit)."""
    statement = apply_filter(select(AuditRecord), wanted).order_by(
        col(AuditRecord.occurred_at), col(AuditRecord.chain_id), col(AuditRecord.seq)
    )
    stream = await session.stream_scalars(statement.execution_options(yield_per=batch))
    async for record in stream:
        yield record


def csv_row(record: AuditRecord) -> dict[str, Any]:
    values = record_as_json(record)
    values["agents"] = json.dumps(values["agents"], ensure_ascii=False)
    values["data"] = json.dumps(values["data"], ensure_ascii=False)
    return {name: values[name] for name in CSV_COLUMNS}


def csv_text(records: Iterable[AuditRecord], *, header: bool = True) -> str:
    """Records as CSV, values exactly as stored (a machine export: no spreadsheet escaping)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    for record in records:
        writer.writerow(csv_row(record))
    return buffer.getvalue()


def jsonl_line(record: AuditRecord) -> str:
    return json.dumps(record_as_json(record), ensure_ascii=False)
