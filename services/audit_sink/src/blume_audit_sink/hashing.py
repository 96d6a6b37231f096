"""The hash of a record: which columns, their one JSON spelling, and SHA-256 over the link.

A record's hash is SHA-256 (hex) of ``prev_hash``, a newline, and the canonical JSON of its
hashed columns (timestamps as UTC ISO 8601). The formula is pinned so that a compliance team
can re-verify an export with nothing but this description.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import orjson
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


def new_row_hash(row: Mapping[str, Any]) -> str:
    """``record_hash(row["prev_hash"], hashed_fields(row))`` for a row being appended now.

    The hot path of a batch: the row is at the current hash version with aware timestamps,
    so the fields are laid out in sorted order and encoded by orjson without sorting. For
    what a row being appended holds (text, 64-bit integers and nulls) orjson writes exactly
    the canonical JSON's bytes: the tests hold it to that for every Unicode scalar value and
    the integer limits, and every verify recomputes the hash with the standard library.
    """
    fields = {name: row[name] for name in _SORTED_HASHED_COLUMNS}
    for name in _TIMESTAMPS:
        fields[name] = as_utc(row[name]).isoformat()
    link = f"{row['prev_hash']}\n".encode()
    return hashlib.sha256(link + orjson.dumps(fields)).hexdigest()
