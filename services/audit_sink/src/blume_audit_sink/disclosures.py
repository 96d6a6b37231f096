"""The accounting of disclosures (HIPAA 45 CFR 164.528) for one patient of one tenant.

For each disclosure in the period (six years back by default, as 164.528(a)(1) allows the
individual to ask for): the date, the name and address of the recipient, a brief
description of the PHI disclosed, and a brief statement of its purpose. A disclosure is a
record the catalog marks so: an email sent for a share, or the study published into the
patient's Blume record. Whom it reached is read from the event's own data, never from its
type: an email whose ``purpose`` is a sign-in code only authenticates a recipient (it
carries no PHI of the study), and one whose ``addressee`` is the patient (Step into Blume),
like a publication naming the patient's Blume account, is a disclosure to the individual,
which 164.528(a)(1)(i) leaves out of the accounting. Both are listed only on request
(``include_to_patient``), each marked with its ``audience``.

The details come from the share's own records: the request (study, sender, recipient)
and the link issued for it, found by share id.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from blume_contracts import audit_catalog as catalog
from blume_runtime.db import as_utc, utcnow
from jinja2 import Environment, select_autoescape
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink.export import records_matching
from blume_audit_sink.models import AuditRecord
from blume_audit_sink.search import RecordFilter

SIX_YEARS: Final = timedelta(days=6 * 365 + 2)
_CONTEXT_TYPES: Final = ("study.send.requested", "share.link.issued", "share.blume.requested")

Audience = Literal["third_party", "patient", "authentication"]
"""Whom a disclosure reached: someone other than the patient (what 164.528 accounts for),
the patient herself, or a recipient being sent only a sign-in code."""

_METHODS: Final[dict[tuple[str, Audience], str]] = {
    ("share.notification.sent", "third_party"): "Secure, time-limited link sent by email",
    ("share.notification.sent", "patient"): "Step into Blume email to the patient",
    ("share.notification.sent", "authentication"): "Sign-in code sent by email",
    ("share.blume.published", "patient"): "Published into the patient's Blume record",
}
_PURPOSES: Final = {catalog.Purpose.TREATMENT: "Treatment"}


def audience_of(data: Any, share: dict[str, Any]) -> Audience | None:
    """Whom the event says it reached, from its purpose and addressee; None when it
    disclosed nothing of the patient (the email telling a sender their link was locked).

    Records written before ``addressee`` existed fall back on the share itself: a share
    requested for a Blume account (``blume_patient_id``) only ever emails the patient.
    """
    fields = data if isinstance(data, dict) else {}
    purpose = fields.get("purpose", "share")
    if purpose == "sign_in_code":
        return "authentication"
    if purpose != "share":
        return None
    if (
        fields.get("addressee") == "patient"
        or _text(fields.get("blume_patient_id"))
        or _text(share.get("blume_patient_id"))
    ):
        return "patient"
    return "third_party"


@dataclass(frozen=True, slots=True)
class Disclosure:
    disclosed_at: str
    recipient_name: str
    recipient_address: str
    description: str
    purpose: str
    disclosed_by: str
    method: str
    audience: Audience
    share_id: str
    record: str
    """``chain/seq`` of the audit record, so each line can be traced and verified."""


@dataclass(slots=True)
class DisclosureReport:
    tenant: str
    patient_mrn: str
    since: str
    until: str
    generated_at: str
    disclosures: list[Disclosure] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def _share_context(
    session: AsyncSession, tenant: str, share_ids: set[str]
) -> dict[str, dict[str, Any]]:
    """For each share: the data of its request and of its link, merged (request first)."""
    if not share_ids:
        return {}
    statement = (
        select(AuditRecord.share_id, AuditRecord.payload)
        .where(
            col(AuditRecord.chain_id) == tenant,
            col(AuditRecord.share_id).in_(sorted(share_ids)),
            col(AuditRecord.event_type).in_(_CONTEXT_TYPES),
        )
        .order_by(col(AuditRecord.seq))
    )
    context: dict[str, dict[str, Any]] = {}
    for share_id, payload in (await session.exec(statement)).all():
        data = json.loads(payload)
        if share_id is not None and isinstance(data, dict):
            merged = context.setdefault(share_id, {})
            for key, value in data.items():
                merged.setdefault(key, value)
    return context


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _description(context: dict[str, Any], record: AuditRecord) -> str:
    study = context.get("study") if isinstance(context.get("study"), dict) else {}
    assert isinstance(study, dict)
    parts = ["Imaging study"]
    if described := _text(study.get("description")):
        parts.append(described)
    modalities = [m for m in study.get("modalities") or [] if isinstance(m, str)]
    if modalities:
        parts.append(f"({', '.join(modalities)})")
    if study_date := _text(study.get("study_date")):
        parts.append(f"of {study_date}")
    if accession := _text(study.get("accession_number")):
        parts.append(f"accession {accession}")
    uid = record.study_uid or _text(study.get("study_instance_uid"))
    if uid:
        parts.append(f"(Study Instance UID {uid})")
    return " ".join(parts) + ": images and report"


def _disclosure(record: AuditRecord, context: dict[str, Any], audience: Audience) -> Disclosure:
    agents = json.loads(record.agents) if record.agents else []
    recipient = catalog.role_of(agents, "recipient") or catalog.role_of(agents, "patient")
    requested_to = context.get("recipient") if isinstance(context.get("recipient"), dict) else {}
    assert isinstance(requested_to, dict)
    sender = context.get("sender") if isinstance(context.get("sender"), dict) else {}
    assert isinstance(sender, dict)
    sender_name = _text(sender.get("name")) or "unknown user"
    sender_id = _text(sender.get("user_id")) or record.sender_user_id or "?"
    kind = catalog.classify(record.event_type)
    purpose = _PURPOSES.get(kind.purpose, "Not stated") if kind.purpose else "Not stated"
    why = f"{purpose}: shared by {sender_name} ({sender_id}) for the recipient's review"
    if audience == "authentication":
        why = f"Authentication: a sign-in code for a share by {sender_name} ({sender_id})"
    return Disclosure(
        disclosed_at=as_utc(record.occurred_at).isoformat(),
        recipient_name=(
            "the patient"
            if audience == "patient"
            else recipient.get("name") or _text(requested_to.get("name")) or "not recorded"
        ),
        recipient_address=recipient.get("email")
        or _text(requested_to.get("email"))
        or record.recipient_email
        or "not recorded",
        description=(
            "A one-time sign-in code: no part of the study"
            if audience == "authentication"
            else _description(context, record)
        ),
        purpose=why,
        disclosed_by=f"{sender_name} ({sender_id})",
        method=_METHODS.get((record.event_type, audience), record.event_type),
        audience=audience,
        share_id=record.share_id or "",
        record=f"{record.chain_id}/{record.seq}",
    )


@dataclass(frozen=True, slots=True)
class DisclosureRequest:
    """Whose accounting, over which period; the fields are also the API's query parameters."""

    tenant: str
    patient_mrn: str
    since: datetime | None = None
    """Default: six years back, the period HIPAA 164.528 gives the patient a right to."""
    until: datetime | None = None
    include_to_patient: bool = False
    """Also list what reached the patient herself (her Blume record, its email) and the
    sign-in code emails that only authenticate a recipient."""


async def accounting(session: AsyncSession, wanted: DisclosureRequest) -> DisclosureReport:
    now = utcnow()
    since = as_utc(wanted.since) if wanted.since is not None else now - SIX_YEARS
    until = as_utc(wanted.until) if wanted.until is not None else now
    types = tuple(catalog.disclosure_types())
    tenant, patient_mrn = wanted.tenant, wanted.patient_mrn
    selected = RecordFilter(
        tenant_id=tenant, patient_mrn=patient_mrn, event_types=types, since=since, until=until
    )
    records = [record async for record in records_matching(session, selected)]
    context = await _share_context(session, tenant, {r.share_id for r in records if r.share_id})
    disclosures = []
    for record in records:
        share = context.get(record.share_id or "", {})
        audience = audience_of(json.loads(record.payload) if record.payload else None, share)
        if audience == "third_party" or (audience is not None and wanted.include_to_patient):
            disclosures.append(_disclosure(record, share, audience))
    return DisclosureReport(
        tenant=tenant,
        patient_mrn=patient_mrn,
        since=since.isoformat(),
        until=until.isoformat(),
        generated_at=now.isoformat(),
        disclosures=disclosures,
    )


# -------------------------------------------------------------------------------- output

CSV_COLUMNS: Final = (
    "disclosed_at",
    "recipient_name",
    "recipient_address",
    "description",
    "purpose",
    "disclosed_by",
    "method",
    "audience",
    "share_id",
    "record",
)


def spreadsheet_safe(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def as_csv(report: DisclosureReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for disclosure in report.disclosures:
        values = asdict(disclosure)
        writer.writerow([spreadsheet_safe(str(values[name])) for name in CSV_COLUMNS])
    return buffer.getvalue()


def as_json(report: DisclosureReport) -> str:
    return json.dumps(report.as_json(), ensure_ascii=False, indent=2)


_HTML = Environment(autoescape=select_autoescape(default=True)).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Accounting of disclosures</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #999;padding:.4em;vertical-align:top;text-align:left}</style>
</head><body>
<h1>Accounting of disclosures</h1>
<p>Organisation: {{ report.tenant }}<br>
Patient (MRN): {{ report.patient_mrn }}<br>
Period: {{ report.since }} to {{ report.until }}<br>
Prepared: {{ report.generated_at }}</p>
<p>Under 45 CFR 164.528 this lists each disclosure of the patient's protected health
information in the period: its date, the recipient, what was disclosed and why.</p>
{% if report.disclosures %}
<table>
<thead><tr><th>Date</th><th>Recipient</th><th>Address</th><th>What was disclosed</th>
<th>Purpose</th><th>How</th><th>To</th><th>Reference</th></tr></thead>
<tbody>
{% for d in report.disclosures %}<tr><td>{{ d.disclosed_at }}</td><td>{{ d.recipient_name }}</td>
<td>{{ d.recipient_address }}</td><td>{{ d.description }}</td><td>{{ d.purpose }}</td>
<td>{{ d.method }}</td><td>{{ d.audience }}</td><td>{{ d.share_id }}<br>{{ d.record }}</td></tr>
{% endfor %}</tbody></table>
{% else %}<p>No disclosures in this period.</p>{% endif %}
</body></html>
"""
)


def as_html(report: DisclosureReport) -> str:
    return _HTML.render(report=report)
