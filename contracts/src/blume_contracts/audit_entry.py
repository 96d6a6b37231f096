"""What an event becomes in the audit store: secrets fingerprinted, classified, keys pulled out.

``prepare`` runs where an event is staged for the audit store: in its producer's own
transaction (the runtime, ``blume_runtime.db``), or in the audit sink for what reaches it over
the exchange. The ``Entry`` it makes is staged as JSON and chained later by the sink's sealer.
Nothing secret survives this step. A refused event is staged as a ``security_record`` instead.
"""

from __future__ import annotations

import operator
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter, itemgetter
from typing import Any, Final

import orjson
from pydantic_core import to_jsonable_python

from blume_contracts import audit_catalog as catalog
from blume_contracts.envelope import RawEvent, now
from blume_contracts.ids import share_id_for
from blume_contracts.registry import SENSITIVE_FIELDS, protect_for_audit
from blume_contracts.sensitivity import Sensitivity
from blume_contracts.serialisation import canonical_json, compact_json

AUDIT_SCHEMA: Final = "audit_sink"
"""The audit sink's PostgreSQL schema, which holds the staging table every producer writes."""
AUDIT_STAGING_TABLE: Final = "audit_pending"
"""Where an event waits, prepared, for the sealer to chain it."""
SECURITY_CHAIN: Final = "_security"
"""Where security records go: one chain for every refused event, whatever tenant it named
(an untrusted publisher must not be able to start chains under names of its choosing)."""
SECURITY_SOURCE: Final = "/blume-share/audit_sink"
_SECURITY_IDS: Final = uuid.UUID("8d3c6f0e-2b7a-4f5e-9c1d-3a6b8e2f4d70")


def _as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything the store keeps is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Values copied into the indexed columns. Anything else (data that broke its contract can
# hold any JSON) stays in the payload only, so a bad value can never fail the insert.
_INDEXABLE = re.compile(r"^[\x21-\x7e]{1,256}$")


def _indexable(value: Any) -> str | None:
    return value if isinstance(value, str) and _INDEXABLE.match(value) else None


def _study_uid(data: Any) -> str | None:
    """``data.study.study_instance_uid`` (a send request) or ``data.study_instance_uid``."""
    if not isinstance(data, dict):
        return None
    study = data.get("study")
    if isinstance(study, dict) and "study_instance_uid" in study:
        return _indexable(study["study_instance_uid"])
    return _indexable(data.get("study_instance_uid"))


def _share_id(event: RawEvent, data: Any) -> str | None:
    if event.type == "study.send.requested":
        # The dispatcher's rule, from the contracts: the request's record carries its
        # share's id, so a share's whole trail has one key from its first record on.
        return share_id_for(event)
    return _indexable(data.get("share_id")) if isinstance(data, dict) else None


@dataclass(slots=True)
class Entry:
    """An event made ready for the chain: secrets fingerprinted, classified, keys extracted.

    Staged as JSON until the sealer appends it; ``seq`` and the hashes come at append time.
    """

    chain_id: str
    event_id: str
    event_source: str
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    share_id: str | None
    correlation_id: str
    study_uid: str | None
    payload: str
    event_code: str
    action: str
    outcome: str
    patient_mrn: str | None
    sender_user_id: str | None
    recipient_email: str | None
    agents: str

    def to_json(self) -> str:
        values = {name: getattr(self, name) for name in self.__slots__}
        values["occurred_at"] = self.occurred_at.isoformat()
        values["recorded_at"] = self.recorded_at.isoformat()
        return compact_json(values)

    @staticmethod
    def share_id_json(share_id: str) -> str:
        """How ``to_json`` writes ``share_id``: the text a staged entry of that share contains.

        Inside ``payload`` and ``agents`` (JSON strings themselves) the quotes are escaped,
        so only the entry's own share id matches.
        """
        return f'"share_id":{compact_json(share_id)}'

    @classmethod
    def from_json(cls, text: str) -> Entry:
        return cls(**staged_row(text))

    def as_row(self) -> dict[str, Any]:
        """The entry's values as the start of its record's row (``append.append_rows``)."""
        return dict(zip(self.__slots__, _ENTRY_VALUES(self), strict=True))


_ENTRY_VALUES: Final = attrgetter(*Entry.__slots__)


def staged_row(text: str) -> dict[str, Any]:
    """A staged entry (``Entry.to_json``) decoded straight into the start of its record's
    row: what ``Entry.from_json(text).as_row()`` gives, without the object between."""
    values: dict[str, Any] = orjson.loads(text)
    values["occurred_at"] = datetime.fromisoformat(values["occurred_at"])
    values["recorded_at"] = datetime.fromisoformat(values["recorded_at"])
    return values


_TEXT_LIMITS: Final = {
    "chain_id": 256,
    "event_id": 256,
    "event_source": 256,
    "event_type": 128,
    "correlation_id": 256,
    "payload": None,
    "event_code": 200,
    "action": 1,
    "outcome": 2,
    "agents": None,
}
"""Each text column a record must have, and its length limit (``blume_audit_sink.models``)."""
_NULLABLE_LIMIT: Final = 256
"""The limit of every text column a record may leave null (share, study, people)."""
_ENTRY_KEYS: Final = frozenset(Entry.__slots__)
_REQUIRED_TEXT: Final = itemgetter(*_TEXT_LIMITS)
_LIMITED: Final = itemgetter(*(name for name, limit in _TEXT_LIMITS.items() if limit))
_LIMITS: Final = tuple(limit for limit in _TEXT_LIMITS.values() if limit)
_NULLABLE_TEXT: Final = itemgetter(
    *(name for name in Entry.__slots__ if name not in _TEXT_LIMITS and not name.endswith("_at"))
)
_TEXT: Final = frozenset({str})


def checked_staged_row(text: str) -> dict[str, Any] | None:
    """``staged_row``, or None if ``text`` is not an entry the store can hold as a record.

    Producers stage entries themselves, so an entry is checked before it is chained: every
    field present and nothing else, each text within its column's limit and free of NUL
    (which PostgreSQL text cannot hold), both timestamps aware. A bad entry would otherwise
    fail its whole batch, again at every try.
    """
    try:
        values = staged_row(text)
        return values if _holdable(values) else None
    except (ValueError, TypeError, KeyError, AttributeError):  # JSONDecodeError: ValueError
        return None


def _holdable(values: dict[str, Any]) -> bool:
    """Whether a decoded entry's fields fit a record's columns (a missing one: KeyError)."""
    required = _REQUIRED_TEXT(values)
    nullable = [value for value in _NULLABLE_TEXT(values) if value is not None]
    texts = (*required, *nullable)
    return (
        len(values) == len(_ENTRY_KEYS)  # every field was found: so nothing else is there
        and set(map(type, texts)) == _TEXT
        and "\x00" not in "".join(texts)
        and not any(map(operator.gt, map(len, _LIMITED(values)), _LIMITS))
        and all(len(value) <= _NULLABLE_LIMIT for value in nullable)
        and values["occurred_at"].tzinfo is not None
        and values["recorded_at"].tzinfo is not None
    )


_SECRET_KEYS: Final = tuple(
    f'"{name}":' for name, marking in SENSITIVE_FIELDS.items() if marking is Sensitivity.SECRET
)


def _protected(data: Any) -> tuple[Any, str]:
    """The data with secrets fingerprinted, and its canonical JSON.

    Most events carry no secret at all: when no secret field's name appears as a key in
    the JSON text, fingerprinting would change nothing and the walk through the data is
    skipped.
    """
    text = canonical_json(data)
    if not any(key in text for key in _SECRET_KEYS):
        return data, text
    protected = protect_for_audit(data)
    return protected, canonical_json(protected)


def prepare(
    event: RawEvent, *, received_at: datetime | None = None, broker_user: str | None = None
) -> Entry:
    """``event`` as the audit store keeps it; nothing secret survives this step.

    ``broker_user`` is the verified publisher of an outside request (the requester).
    """
    data, payload = _protected(to_jsonable_python(event.data))
    kind = catalog.classify(event.type)
    agents = catalog.agents_of(data, broker_user)
    return Entry(
        chain_id=event.tenantid,
        event_id=event.id,
        event_source=event.source,
        event_type=event.type,
        # SQLite drops the offset when it stores a timestamp: store UTC so it reads back equal.
        occurred_at=_as_utc(event.time),
        recorded_at=received_at or datetime.now(UTC),
        share_id=_share_id(event, data),
        correlation_id=event.correlationid,
        study_uid=_study_uid(data),
        payload=payload,
        event_code=kind.code.token,
        action=kind.action.value,
        outcome=kind.outcome.value,
        patient_mrn=_indexable(catalog.patient_mrn_of(data)),
        sender_user_id=_indexable(catalog.role_of(agents, "sender").get("user_id")),
        recipient_email=_indexable(catalog.recipient_email_of(agents)),
        agents=canonical_json(agents),
    )


def security_record(
    *,
    event_type: str,
    event_id: str,
    source: str,
    tenantid: str | None,
    producer: str | None,
    refusal: str,
) -> RawEvent:
    """What the store keeps of a refused event: its claims and its publisher, not its data.

    The record's id is derived from the claims and the publisher, so the same forged message
    refused again (a redelivery, or by each consumer it reached) is recorded once; it is never
    the claimed id, which a forger could use to keep the genuine event of that id out of the
    store. ``producer`` is who published it: a broker user, or a database role
    (``db:<role>``) for a row staged under a service it is not.
    """
    claims = (source, event_id, event_type, producer or "")
    record_id = str(uuid.uuid5(_SECURITY_IDS, "\n".join(claims)))
    return RawEvent(
        id=record_id,
        source=SECURITY_SOURCE,
        type=catalog.UNTRUSTED_PRODUCER_TYPE,
        time=now(),
        tenantid=SECURITY_CHAIN,
        # The claimed id when it can be one (a staged row's claims can be anything).
        correlationid=_indexable(event_id) or record_id,
        data={
            "cause": "untrusted_producer",
            "refusal": refusal,
            "claimed_type": event_type,
            "claimed_source": source,
            "claimed_id": event_id,
            "claimed_tenant": tenantid,
            "producer": producer,
        },
    )
