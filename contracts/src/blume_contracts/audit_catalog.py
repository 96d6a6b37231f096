"""What each event type means to an auditor: the one table, and what is read from the data.

Every event type on the exchange maps to a DICOM (PS3.15 A.5, as IHE ATNA uses them) or
FHIR event code, a FHIR AuditEvent action and outcome, and whether it is a disclosure of
PHI (accounted for under HIPAA 164.528) or an access to it (a read PHIPA wants logged).
A type not in the table (a newer producer's) is recorded with a generic code, so the sink
never refuses an event for not knowing it.

The people involved are read from the data the same way for every type: ``sender``,
``recipient`` (or ``recipient_email`` / ``patient_email``), the Blume patient account,
and ``client_ip`` / ``user_agent`` where a web access carries them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
BLUME_EVENT_CODES: Final = "urn:blume-share:audit-event-type"
"""Our own code system, for the generic code of types the table does not know."""


@dataclass(frozen=True, slots=True)
class Code:
    """One coded concept: its code system (``DCM``, FHIR's, or ours), the code, its display."""

    system: str
    code: str
    display: str

    @property
    def token(self) -> str:
        """The FHIR token spelling, ``system|code``, as the record stores it."""
        return f"{self.system}|{self.code}"


class Action(StrEnum):
    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class Outcome(StrEnum):
    """FHIR R4 AuditEvent.outcome."""

    SUCCESS = "0"
    MINOR_FAILURE = "4"
    SERIOUS_FAILURE = "8"
    MAJOR_FAILURE = "12"


class Purpose(StrEnum):
    """HL7 v3 PurposeOfUse codes, for the disclosure report and AuditEvent.purposeOfEvent."""

    TREATMENT = "TREAT"


EXPORT = Code(DCM, "110106", "Export")
INSTANCES_ACCESSED = Code(DCM, "110103", "DICOM Instances Accessed")
USER_AUTHENTICATION = Code(DCM, "110114", "User Authentication")
SECURITY_ALERT = Code(DCM, "110113", "Security Alert")
AUDIT_LOG_USED = Code(DCM, "110101", "Audit Log Used")
APPLICATION_ACTIVITY = Code(DCM, "110100", "Application Activity")
PATIENT_RECORD = Code(DCM, "110110", "Patient Record")
UNCLASSIFIED = Code(BLUME_EVENT_CODES, "unclassified", "Event type not in the audit catalog")

CODES_BY_TOKEN: Final = {
    code.token: code
    for code in (
        EXPORT,
        INSTANCES_ACCESSED,
        USER_AUTHENTICATION,
        SECURITY_ALERT,
        AUDIT_LOG_USED,
        APPLICATION_ACTIVITY,
        PATIENT_RECORD,
        UNCLASSIFIED,
    )
}


@dataclass(frozen=True, slots=True)
class EventClass:
    code: Code
    action: Action
    outcome: Outcome = Outcome.SUCCESS
    disclosure: bool = False
    """PHI left the organisation: a PrivacyDisclosure, a line of the accounting report."""
    access: bool = False
    """Someone read the study: a Read in the FHIR export."""
    purpose: Purpose | None = None


AUDIT_LOG_USED_TYPE: Final = "audit.log.used"
"""Recorded for every use of the compliance API (it is not an event on the exchange)."""
UNTRUSTED_PRODUCER_TYPE: Final = "security.untrusted_producer"
"""Recorded for every event refused because of who published it (not an event on the
exchange: the refused event itself is never recorded as genuine)."""

_E, _R, _C, _D = Action.EXECUTE, Action.READ, Action.CREATE, Action.DELETE
_MINOR, _SERIOUS = Outcome.MINOR_FAILURE, Outcome.SERIOUS_FAILURE

# Every step of a share is part of one export of the study; the step that hands it over is
# the disclosure. Web accesses (the gateway's, later) are reads; denials are failed logins.
CATALOG: Final[Mapping[str, EventClass]] = {
    "study.send.requested": EventClass(EXPORT, _E),
    "share.accepted": EventClass(EXPORT, _E),
    "share.rejected": EventClass(EXPORT, _E, _MINOR),
    "share.link.requested": EventClass(EXPORT, _E),
    "share.link.issued": EventClass(EXPORT, _C),
    "share.notification.sent": EventClass(EXPORT, _R, disclosure=True, purpose=Purpose.TREATMENT),
    "share.notification.failed": EventClass(EXPORT, _E, _SERIOUS),
    "share.notification.delayed": EventClass(EXPORT, _E, _MINOR),
    "share.notification.suppressed": EventClass(EXPORT, _E),
    "share.blume.requested": EventClass(EXPORT, _E),
    "share.blume.published": EventClass(EXPORT, _R, disclosure=True, purpose=Purpose.TREATMENT),
    "share.blume.withheld": EventClass(EXPORT, _E, _MINOR),
    "share.completed": EventClass(EXPORT, _E),
    "share.failed": EventClass(EXPORT, _E, _SERIOUS),
    "share.revoke.requested": EventClass(SECURITY_ALERT, _E),
    "share.revoked": EventClass(SECURITY_ALERT, _D),
    "share.link.opened": EventClass(USER_AUTHENTICATION, _E),
    "share.otp.requested": EventClass(USER_AUTHENTICATION, _E),
    "share.link.denied": EventClass(USER_AUTHENTICATION, _E, _MINOR),
    # Too many wrong sign-in codes: the link locked itself, a possible guessing attack.
    "share.link.locked": EventClass(SECURITY_ALERT, _E, _MINOR),
    "share.link.accessed": EventClass(INSTANCES_ACCESSED, _R, access=True),
    "share.tracking.updated": EventClass(EXPORT, _E),
    # Tells the sender what became of a share (no PHI): part of the share's own export.
    "share.sender.notification.requested": EventClass(EXPORT, _E),
    "share.blume.viewed": EventClass(INSTANCES_ACCESSED, _R, access=True),
    "share.blume.denied": EventClass(USER_AUTHENTICATION, _E, _MINOR),
    "session.signed_out": EventClass(USER_AUTHENTICATION, _E),
    # The images through the gateway's proxy: IHE BALP Read per series, Export for a download.
    "share.images.viewed": EventClass(INSTANCES_ACCESSED, _R, access=True),
    "share.images.exported": EventClass(EXPORT, _R, access=True),
    "share.images.unavailable": EventClass(INSTANCES_ACCESSED, _R, _MINOR),
    AUDIT_LOG_USED_TYPE: EventClass(AUDIT_LOG_USED, _R),
    # An operator acting on dead letters: replay re-runs messages, purge deletes them.
    "ops.dead_letters.replayed": EventClass(APPLICATION_ACTIVITY, _E),
    "ops.dead_letters.purged": EventClass(APPLICATION_ACTIVITY, _D),
    # An operator reading through the command line: the audit trail, or shares and accounts.
    "ops.audit_log.read": EventClass(AUDIT_LOG_USED, _R),
    "ops.records.read": EventClass(PATIENT_RECORD, _R),
    UNTRUSTED_PRODUCER_TYPE: EventClass(SECURITY_ALERT, _E, _SERIOUS),
    # A Blume patient account created or changed (status, consent directives, preferences).
    "patient.account.updated": EventClass(PATIENT_RECORD, Action.UPDATE),
    # The patient's own choice, from the one-click unsubscribe of a Blume email.
    "patient.notifications.unsubscribed": EventClass(PATIENT_RECORD, Action.UPDATE),
}
GENERIC: Final = EventClass(UNCLASSIFIED, _E)


def classify(event_type: str) -> EventClass:
    return CATALOG.get(event_type, GENERIC)


def disclosure_types() -> list[str]:
    return sorted(name for name, entry in CATALOG.items() if entry.disclosure)


# ------------------------------------------------------------------ reading the event data


def _text(value: Any) -> str | None:
    """Data that broke its contract can hold anything: only short printable strings count."""
    return (
        value if isinstance(value, str) and 0 < len(value) <= 512 and value.isprintable() else None
    )


def _object(value: Any, key: str) -> dict[str, Any]:
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, dict) else {}


def patient_mrn_of(data: Any) -> str | None:
    """``study.patient.mrn`` (a send request), ``study.patient_mrn`` (Blume) or ``patient_mrn``."""
    study = _object(data, "study")
    mrn = _text(_object(study, "patient").get("mrn")) or _text(study.get("patient_mrn"))
    return mrn or (_text(data.get("patient_mrn")) if isinstance(data, dict) else None)


def _agent(role: str, **fields: Any) -> dict[str, str] | None:
    kept = {name: text for name, value in fields.items() if (text := _text(value)) is not None}
    return {"role": role, **kept} if kept else None


def agents_of(data: Any, broker_user: str | None = None) -> list[dict[str, str]]:
    """The people and clients named in the data, each with its role, in a fixed order.

    Roles: ``sender`` (the user who shared), ``recipient`` (who the study went to),
    ``patient`` (the Blume account holder), ``requester`` (who asked for a revocation, and
    the verified broker user that published an outside request: ``broker_user``) and
    ``client`` (the browser of a web access, with the signed-in identity if any, or the
    compliance tool that used the audit API).
    """
    if not isinstance(data, dict):
        requester = _agent("requester", broker_user=broker_user)
        return [requester] if requester else []
    sender = _object(data, "sender")
    recipient = _object(data, "recipient")
    account = _object(data, "patient_account")
    # The web gateway nests the browser's details under ``client``.
    client = _object(data, "client") or data
    found = [
        _agent(
            "sender",
            user_id=sender.get("user_id"),
            name=sender.get("name"),
            email=sender.get("email"),
        ),
        _agent(
            "recipient",
            name=recipient.get("name"),
            email=recipient.get("email") or data.get("recipient_email"),
        ),
        _agent(
            "patient",
            blume_patient_id=account.get("blume_patient_id") or data.get("blume_patient_id"),
            email=data.get("patient_email"),
        ),
        _agent("requester", user_id=data.get("requested_by"), broker_user=broker_user),
        _agent(
            "client",
            user_id=data.get("api_client"),
            email=data.get("signed_in_as"),
            client_ip=client.get("client_ip"),
            user_agent=client.get("user_agent"),
        ),
    ]
    return [agent for agent in found if agent is not None]


def role_of(agents: list[dict[str, str]], role: str) -> dict[str, str]:
    return next((agent for agent in agents if agent["role"] == role), {})


def recipient_email_of(agents: list[dict[str, str]]) -> str | None:
    """Whom the study went to: the recipient, or for a Blume share the patient; lower-cased."""
    email = role_of(agents, "recipient").get("email") or role_of(agents, "patient").get("email")
    return email.lower() if email else None
