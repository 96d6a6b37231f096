"""The appending hash (the hot path, encoding the sorted fields without sorting) against the
pinned formula, over awkward values and types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from blume_audit_sink.hashing import (
    CURRENT_HASH_VERSION,
    HASHED_COLUMNS,
    hashed_fields,
    new_row_hash,
    record_hash,
)
from blume_audit_sink.models import GENESIS_HASH

AWKWARD_TEXT = (
    'quote " backslash \\ slash / Montréal « » \u2028 \u2029 \x00 \x1f \t \n \r emoji 🩻 '
    '{"nested":"json","n":[1,2]}'
)


def a_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "chain_id": "demo-hospital",
        "seq": 7,
        "event_id": "evt-1",
        "event_source": "/blume-share/test",
        "event_type": "share.accepted",
        "occurred_at": datetime(2026, 11, 20, 9, 0, 1, 250, tzinfo=UTC),
        "recorded_at": datetime(2026, 11, 20, 9, 0, 2, tzinfo=UTC),
        "share_id": "shr_" + "a" * 32,
        "correlation_id": "corr-1",
        "study_uid": "1.2.3",
        "payload": '{"share_id":"shr_x","note":"é"}',
        "hash_version": CURRENT_HASH_VERSION,
        "event_code": "110106",
        "action": "R",
        "outcome": "0",
        "patient_mrn": "MRN-0001",
        "sender_user_id": "u-1",
        "recipient_email": "bob@clinic.example",
        "agents": '[{"role":"sender","user_id":"u-1"}]',
        "prev_hash": GENESIS_HASH,
    }
    return row | changes


TORONTO = timezone(timedelta(hours=-5))
NULLABLE = ("share_id", "study_uid", "patient_mrn", "sender_user_id", "recipient_email")
CASES: list[dict[str, Any]] = [
    a_row(),
    a_row(**dict.fromkeys(NULLABLE)),
    *(
        a_row(**{column: AWKWARD_TEXT})
        for column in HASHED_COLUMNS
        if column not in ("seq", "hash_version", "occurred_at", "recorded_at")
    ),
    a_row(occurred_at=datetime(2026, 11, 20, 4, 0, tzinfo=TORONTO)),
    a_row(recorded_at=datetime(2026, 11, 20, 9, 0)),  # naive, as SQLite hands it back
    a_row(seq=2**40, prev_hash="f" * 64),
    # Not the columns' types: the general encoder spells them, as canonical JSON would.
    a_row(event_id=12345),
    a_row(seq=True),
    a_row(hash_version=2.0),
    a_row(share_id=["shr_x"]),
]


@pytest.mark.parametrize("row", CASES)
def test_the_appending_hash_is_the_pinned_formula(row: dict[str, Any]) -> None:
    """For any values, awkward text, nulls, offsets and wrong types included, the fast hash of
    a new row is the formula's: SHA-256 of prev_hash, a newline and the canonical JSON."""
    assert new_row_hash(row) == record_hash(row["prev_hash"], hashed_fields(row))


EVERY_CODE_POINT = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)


@pytest.mark.parametrize("column", ["payload", "agents", "event_id", "patient_mrn"])
def test_every_unicode_code_point_hashes_as_the_pinned_formula(column: str) -> None:
    """Text holding every Unicode scalar value (controls, quotes, backslash, U+2028, astral
    planes) hashes exactly as the standard library's canonical JSON spells it: the fast
    encoder escapes nothing more and nothing less."""
    row = a_row(**{column: EVERY_CODE_POINT})
    assert new_row_hash(row) == record_hash(row["prev_hash"], hashed_fields(row))


@pytest.mark.parametrize("seq", [0, 1, 2**53 + 1, 2**63 - 1])
def test_sequence_numbers_to_the_bigint_limit_hash_as_the_pinned_formula(seq: int) -> None:
    """Sequence numbers from 0 to the BIGINT limit, past the range a float holds exactly,
    are spelled as the canonical JSON spells them."""
    row = a_row(seq=seq)
    assert new_row_hash(row) == record_hash(row["prev_hash"], hashed_fields(row))
