"""The hash of a record: which columns, their one JSON spelling, and SHA-256 over the link.

A record's hash is SHA-256 (hex) of ``prev_hash``, a newline, and the canonical JSON of its
hashed columns (timestamps as UTC ISO 8601). The formula is pinned so that a compliance team
can re-verify an export with nothing but this description.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from blume_contracts.serialisation import canonical_json
from blume_runtime.db import as_utc

HASHED_COLUMNS_V1: Final = (
    "chain_id",
    "seq",
    "event_id",
    "event_source",
    "event_type",
    "occurred_at",
    "recorded_at",
    "share_id",
    "correlation_id",
    "study_uid",
    "payload",
)
HASHED_COLUMNS: Final = (
    *HASHED_COLUMNS_V1,
    "hash_version",
    "event_code",
    "action",
    "outcome",
    "patient_mrn",
    "sender_user_id",
    "recipient_email",
    "agents",
)
CURRENT_HASH_VERSION: Final = 2
HASHED_COLUMNS_BY_VERSION: Final[Mapping[int, tuple[str, ...]]] = {
    1: HASHED_COLUMNS_V1,
    2: HASHED_COLUMNS,
}
"""Version 1 rows were written before migration 0002 and keep verifying as they were."""

RECORD_COLUMNS: Final = (*HASHED_COLUMNS, "prev_hash", "hash")

_TIMESTAMPS: Final = ("occurred_at", "recorded_at")


def record_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the previous record's hash and this record's hashed columns."""
    return hashlib.sha256(f"{prev_hash}\n{canonical_json(fields)}".encode()).hexdigest()


def hashed_fields(values: Mapping[Any, Any]) -> dict[str, Any]:
    """The hashed columns of a record (or a row's mapping), timestamps as UTC ISO 8601.

    Which columns depends on the row's ``hash_version``. SQLite hands timestamps back naive
    and PostgreSQL in the session's time zone; both must hash as they did when appended.
    """
    version = values.get("hash_version", CURRENT_HASH_VERSION)
    names = HASHED_COLUMNS_BY_VERSION.get(version, HASHED_COLUMNS)
    fields = {name: values[name] for name in names}
    for name in _TIMESTAMPS:
        stamp = fields[name]
        # An export gives ISO 8601 text; it hashes as the timestamp it names.
        moment = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
        fields[name] = as_utc(moment).isoformat()
    return fields


_SORTED_HASHED_COLUMNS: Final = tuple(sorted(HASHED_COLUMNS))
_ENCODE_IN_ORDER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# The function json.dumps(..., ensure_ascii=False) spells every string with (C, one call).
_STRING: Final = json.encoder.encode_basestring


def new_row_hash(row: Mapping[str, Any]) -> str:
    """``record_hash(row["prev_hash"], hashed_fields(row))`` for a row being appended now.

    The hot path of a batch: the row is at the current hash version with aware timestamps,
    so its canonical JSON is spelled value by value into the sorted layout, which is byte
    for byte what ``canonical_json`` writes (the tests and every verify hold it to that).
    A value of another type than its column's takes the general encoder.
    """
    try:
        body = _canonical_body(row)
    except TypeError:
        fields = {name: row[name] for name in _SORTED_HASHED_COLUMNS}
        for name in _TIMESTAMPS:
            fields[name] = as_utc(row[name]).isoformat()
        body = _ENCODE_IN_ORDER(fields)
    return hashlib.sha256(f"{row['prev_hash']}\n{body}".encode()).hexdigest()


def _canonical_body(row: Mapping[str, Any]) -> str:
    """The canonical JSON of a current row's hashed columns; TypeError if a value is not of
    its column's type (text, nullable text, integer, aware timestamp)."""
    string = _STRING  # raises TypeError on anything but a str
    seq, version = row["seq"], row["hash_version"]
    if type(seq) is not int or type(version) is not int:  # bool is an int json spells apart
        raise TypeError("seq and hash_version must be int")
    # ISO 8601 of an aware UTC timestamp: digits, '-', ':', 'T', '.', '+', nothing to escape.
    occurred = as_utc(row["occurred_at"]).isoformat()
    recorded = as_utc(row["recorded_at"]).isoformat()
    mrn, recipient, sender = row["patient_mrn"], row["recipient_email"], row["sender_user_id"]
    share, study = row["share_id"], row["study_uid"]
    return (
        f'{{"action":{string(row["action"])},"agents":{string(row["agents"])}'
        f',"chain_id":{string(row["chain_id"])}'
        f',"correlation_id":{string(row["correlation_id"])}'
        f',"event_code":{string(row["event_code"])},"event_id":{string(row["event_id"])}'
        f',"event_source":{string(row["event_source"])}'
        f',"event_type":{string(row["event_type"])},"hash_version":{version}'
        f',"occurred_at":"{occurred}","outcome":{string(row["outcome"])}'
        f',"patient_mrn":{"null" if mrn is None else string(mrn)}'
        f',"payload":{string(row["payload"])}'
        f',"recipient_email":{"null" if recipient is None else string(recipient)}'
        f',"recorded_at":"{recorded}"'
        f',"sender_user_id":{"null" if sender is None else string(sender)},"seq":{seq}'
        f',"share_id":{"null" if share is None else string(share)}'
        f',"study_uid":{"null" if study is None else string(study)}}}'
    )
