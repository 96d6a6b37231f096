"""The audit store: one hash chain of records per tenant, and the head of each chain.

Rows are only ever inserted. Each record's ``hash`` covers its columns and the previous
record's hash, so an edit, insertion, deletion or reordering breaks the chain; the head
row remembers where each chain ends, so dropping its last rows shows too.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from blume_runtime.db import timestamp_column
from sqlalchemy import BigInteger, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

HASH_LENGTH = 64
GENESIS_HASH = "0" * HASH_LENGTH
"""The ``prev_hash`` of the first record of every chain."""

# The envelope caps ids, sources and tenant ids at 256 characters.
_TOKEN_LENGTH = 256


class AuditRecord(SQLModel, table=True):
    """One event as the compliance record keeps it: secrets replaced by fingerprints."""

    __tablename__ = "audit_records"
    __table_args__: ClassVar[tuple[UniqueConstraint]] = (
        UniqueConstraint("event_source", "event_id", name="uq_audit_records_event"),
    )

    chain_id: str = Field(primary_key=True, max_length=_TOKEN_LENGTH)
    """The tenant id: tenants append to their own chains without waiting for each other."""
    seq: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    """1, 2, 3... within the chain."""
    event_id: str = Field(max_length=_TOKEN_LENGTH)
    event_source: str = Field(max_length=_TOKEN_LENGTH)
    event_type: str = Field(max_length=128, index=True)
    occurred_at: datetime = timestamp_column(index=True)
    """The event's ``time``, in UTC."""
    recorded_at: datetime = timestamp_column()
    share_id: str | None = Field(default=None, max_length=_TOKEN_LENGTH, index=True)
    correlation_id: str = Field(max_length=_TOKEN_LENGTH, index=True)
    study_uid: str | None = Field(default=None, max_length=_TOKEN_LENGTH, index=True)
    payload: str = Field(sa_type=Text)
    """Canonical JSON of the event's data, secrets replaced by fingerprints."""
    prev_hash: str = Field(min_length=HASH_LENGTH, max_length=HASH_LENGTH)
    hash: str = Field(min_length=HASH_LENGTH, max_length=HASH_LENGTH)


class AuditChainHead(SQLModel, table=True):
    """The last record of a chain, updated in the transaction that appends to it.

    Its row lock serialises appends to one chain.
    """

    __tablename__ = "audit_chain_heads"

    chain_id: str = Field(primary_key=True, max_length=_TOKEN_LENGTH)
    seq: int = Field(sa_type=BigInteger)
    """0 for a chain with no record yet."""
    hash: str = Field(min_length=HASH_LENGTH, max_length=HASH_LENGTH)
