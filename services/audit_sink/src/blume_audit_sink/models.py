"""The audit store: one hash chain of records per tenant, and what protects and governs it.

Rows of ``audit_records`` are only ever inserted (the database refuses UPDATE, DELETE and
TRUNCATE: see migration 0002). Each record's ``hash`` covers its columns and the previous
record's hash, so an edit, insertion, deletion or reordering breaks the chain; the head row
remembers where each chain ends, and signed checkpoints, kept outside the database too,
pin the head at intervals so that a rewritten or cut-off tail shows even to a superuser.

Events reach the chain in two steps: each is staged in ``audit_pending`` by its producer, in
the transaction that emits it (or by the sink, for what reaches it over the exchange), and the
sealer moves staged events into the chains in batches (see ``sealer.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Final

from blume_runtime.db import UtcDateTime, timestamp_column, utcnow
from sqlalchemy import BigInteger, Index, Integer, SmallInteger, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

SCHEMA: Final = "audit_sink"
"""The sink's PostgreSQL schema, named after the service (``service.NAME`` is this)."""

HASH_LENGTH = 64
GENESIS_HASH = "0" * HASH_LENGTH
"""The ``prev_hash`` of the first record of every chain."""

# The envelope caps ids, sources and tenant ids at 256 characters.
_TOKEN_LENGTH = 256


def _chain_key() -> Any:
    """The chain (tenant) id, as the first part of a table's key."""
    return Field(primary_key=True, max_length=_TOKEN_LENGTH)


def _seq_key() -> Any:
    """A position in a chain, as part of a table's key: numbered by the sink, not the database."""
    return Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})


def _sha256_hex() -> Any:
    return Field(min_length=HASH_LENGTH, max_length=HASH_LENGTH)


class AuditRecord(SQLModel, table=True):
    """One event as the compliance record keeps it: secrets replaced by fingerprints."""

    __tablename__ = "audit_records"
    # event_id first (migration 0002): the sealer's duplicate check probes it with a list of
    # ids, and every event comes from one of a handful of sources.
    __table_args__: ClassVar[tuple[UniqueConstraint]] = (
        UniqueConstraint("event_id", "event_source", name="uq_audit_records_event"),
    )

    chain_id: str = _chain_key()
    """The tenant id: tenants append to their own chains without waiting for each other."""
    seq: int = _seq_key()
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
    prev_hash: str = _sha256_hex()
    hash: str = _sha256_hex()

    # Added by migration 0002. Rows written before it have hash_version 1 and no values here;
    # their hash covers the columns above only (see hashing.HASHED_COLUMNS_BY_VERSION).
    hash_version: int = Field(default=2, sa_type=SmallInteger)
    event_code: str | None = Field(default=None, max_length=200)
    """The DICOM/IHE event code as a FHIR token, ``system|code``."""
    action: str | None = Field(default=None, max_length=1)
    """C, R, U, D or E (FHIR AuditEvent.action)."""
    outcome: str | None = Field(default=None, max_length=2)
    """0 success, 4 minor failure, 8 serious failure, 12 major failure (FHIR R4)."""
    patient_mrn: str | None = Field(default=None, max_length=_TOKEN_LENGTH, index=True)
    sender_user_id: str | None = Field(default=None, max_length=_TOKEN_LENGTH, index=True)
    recipient_email: str | None = Field(default=None, max_length=_TOKEN_LENGTH, index=True)
    """Lower-cased, so a query matches whatever case the sender typed."""
    agents: str | None = Field(default=None, sa_type=Text)
    """Canonical JSON list of the people and clients involved (see ``catalog.agents_of``)."""


class AuditChainHead(SQLModel, table=True):
    """The last record of a chain, updated in the transaction that appends to it.

    Its row lock serialises appends to one chain. The database lets it only move forward,
    and only onto a record that exists.
    """

    __tablename__ = "audit_chain_heads"

    chain_id: str = _chain_key()
    seq: int = Field(sa_type=BigInteger)
    """0 for a chain with no record yet."""
    hash: str = _sha256_hex()


class AuditPending(SQLModel, table=True):
    """An event staged but not yet sealed into its chain (secrets already fingerprinted).

    Its producer stages it in the transaction that emits it (``blume_runtime.db``); the sink
    stages what reaches it over the exchange (outside requests, security records).
    """

    __tablename__ = "audit_pending"
    __table_args__: ClassVar[tuple[UniqueConstraint]] = (
        UniqueConstraint("event_source", "event_id", "staged_by", name="uq_audit_pending_event"),
    )

    # SQLite numbers rows itself only for an INTEGER PRIMARY KEY; PostgreSQL gets a BIGSERIAL.
    id: int | None = Field(
        default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer(), "sqlite")
    )
    event_source: str = Field(max_length=_TOKEN_LENGTH)
    event_id: str = Field(max_length=_TOKEN_LENGTH)
    received_at: datetime = timestamp_column()
    entry: str = Field(sa_type=Text)
    """The prepared record as JSON (``audit_entry.Entry``): secrets already fingerprinted."""
    staged_by: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    """Who staged it: on PostgreSQL the database role, set by the database (``current_user``,
    migration 0018) and checked by the sealer against the event's producer; on SQLite ""."""


class AuditStagingRole(SQLModel, table=True):
    """A database role that stages audit rows, and the service it stages for (``audit_sink``:
    anything). Written by migrations only; read by the sealer (``staging_roles``). Empty on
    SQLite, which has no roles."""

    __tablename__ = "audit_staging_roles"

    role_name: str = Field(primary_key=True, max_length=128)
    service: str = Field(max_length=64)


class AuditCheckpoint(SQLModel, table=True):
    """A signed statement of a chain's head; the same bytes are written to the checkpoint dir."""

    __tablename__ = "audit_checkpoints"

    chain_id: str = _chain_key()
    seq: int = _seq_key()
    head_hash: str = _sha256_hex()
    count: int = Field(sa_type=BigInteger)
    created_at: datetime = timestamp_column()
    key_id: str = Field(max_length=64)
    previous_digest: str | None = Field(default=None, max_length=HASH_LENGTH)
    digest: str = _sha256_hex()
    """SHA-256 of the signed payload: the next checkpoint of the chain names it."""
    document: str = Field(sa_type=Text)
    """The checkpoint file's exact content (payload and signature)."""


class AuditPurge(SQLModel, table=True):
    """Records up to ``through_seq`` were purged; the chain now starts after this anchor."""

    __tablename__ = "audit_purges"

    chain_id: str = _chain_key()
    through_seq: int = _seq_key()
    through_hash: str = _sha256_hex()
    """The checkpoint's head hash at ``through_seq``: the next kept row links to it."""
    purged_rows: int = Field(sa_type=BigInteger)
    purged_at: datetime = timestamp_column()
    purged_by: str = Field(max_length=128)


SEVEN_YEARS_DAYS = 7 * 365 + 2
"""The default retention: HIPAA asks for six years, seven is the common policy (two leap days
included). Migration 0002's purge function holds the same number."""


class AuditRetention(SQLModel, table=True):
    """A tenant's retention period from ``effective_at`` on; the newest row applies."""

    __tablename__ = "audit_retention"

    chain_id: str = _chain_key()
    effective_at: datetime = Field(primary_key=True, sa_type=UtcDateTime, default_factory=utcnow)
    retention_days: int
    set_by: str = Field(max_length=128)


class AuditLegalHold(SQLModel, table=True):
    """A legal hold placed or released; a hold with a release row no longer applies."""

    __tablename__ = "audit_legal_holds"
    __table_args__: ClassVar[tuple[Index]] = (Index("ix_audit_legal_holds_chain_id", "chain_id"),)

    hold_id: str = Field(primary_key=True, max_length=64)
    action: str = Field(primary_key=True, max_length=8)
    """``place`` or ``release``."""
    chain_id: str = Field(max_length=_TOKEN_LENGTH)
    patient_mrn: str | None = Field(default=None, max_length=_TOKEN_LENGTH)
    """None: the whole tenant is held."""
    reason: str = Field(max_length=500)
    at: datetime = timestamp_column()
    by: str = Field(max_length=128)
