"""Who staged a row, and whether it may stage that event: the producer identity of staging.

Each service stages its own events' audit rows, and on PostgreSQL the database records who
did: ``staged_by`` is ``current_user``, a column no service may set (migration 0018). Before
chaining a row, the sealer checks that role against what the row claims, by the same rule
the runtime applies to a broker user (``blume_runtime.identity``).

Which role stages for which service is the database's own record, ``audit_staging_roles``
(migration 0018, which named the roles ``<prefix><service>``):

- a role that is (a member of) the audit sink's role or the audit writer (``blume_app``,
  migration 0002), or the staging table's owner (the migrator, whose CLI commands stage as
  the service they act for), may stage anything: the sink stages only what it verified on
  the exchange, and the owner can rewrite the table anyway;
- a service's role (or a login granted it) may stage the events whose source is that
  service and whose type the registry says that service produces, the requests (outside
  types) the registry says it consumes, with their verified publisher, and the security
  record of an event it refused;
- anything else is recorded as what it is, a security record (``security.untrusted_producer``)
  naming the role (``db:<role>``) and what the row claimed, never as the event it claims;
- so is an entry that is not one the store can hold (``checked_staged_row``), whoever staged
  it: chaining it would fail its whole batch at every try, and stall the store.

A superuser is a member of every role, so with one superuser login (development, the tests)
every row is trusted: the identity is not verified, as a single broker user cannot be. On
SQLite (the embedded default, one process) ``staged_by`` is empty and every row is trusted.

What a role may stage is looked up once a minute at most: grants change rarely, and a batch
of rows from five roles then costs no statement at all.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from blume_contracts import audit_entry
from blume_contracts.audit_catalog import UNTRUSTED_PRODUCER_TYPE
from blume_contracts.audit_entry import checked_staged_row
from blume_contracts.registry import EVENTS
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink.models import SCHEMA

SERVICE_SOURCE_PREFIX: Final = "/blume-share/"
REFUSAL: Final = "staged_by_a_role_not_its_producer"
"""The ``refusal`` of a security record made of a row its stager may not stage."""
MALFORMED: Final = "malformed_staged_entry"
"""The ``refusal`` of a security record made of a staged entry the store cannot hold."""
LOOKUP_SECONDS: Final = 60.0

_STAGES_FOR: Final = text(
    f"""SELECT staging.service
       FROM {SCHEMA}.audit_staging_roles AS staging
       JOIN pg_catalog.pg_roles AS named ON named.rolname = staging.role_name
       WHERE pg_catalog.pg_has_role(
           (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = :role), named.oid, 'MEMBER')
       UNION ALL
       SELECT :sink FROM pg_catalog.pg_tables AS owned
       JOIN pg_catalog.pg_roles AS owner ON owner.rolname = owned.tableowner
       WHERE owned.schemaname = :schema AND owned.tablename = :table
         AND pg_catalog.pg_has_role(
             (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = :role), owner.oid, 'MEMBER')"""
)
"""The services ``role`` stages for: those of the roles it is a member of in
``audit_staging_roles`` (migration 0018), and the sink's if it is a member of the staging
table's owner; none if ``role`` no longer exists."""


@dataclass(frozen=True, slots=True)
class StagingRights:
    everything: bool
    services: frozenset[str]


_EVERYTHING: Final = StagingRights(everything=True, services=frozenset())


class StagingRoles:
    """The rule above, for the roles ``audit_staging_roles`` names."""

    def __init__(self) -> None:
        self._producers = {name: frozenset(spec.producers) for name, spec in EVENTS.items()}
        self._consumers = {name: frozenset(spec.consumers) for name, spec in EVENTS.items()}
        self._outside = frozenset(name for name, spec in EVENTS.items() if spec.outside)
        self._known: dict[str, tuple[float, StagingRights]] = {}

    async def vet(
        self, session: AsyncSession, staged: Sequence[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        """The staged entries (entry JSON, who staged it) as record rows: each one its stager
        may not stage, or that is not a well-formed entry, replaced by its security record."""
        rights = {role: await self._rights(session, role) for role in {r for _, r in staged if r}}
        rows: list[dict[str, Any]] = []
        for entry, role in staged:
            row = checked_staged_row(entry)
            if row is None:
                rows.append(_security_row(_claims_of(entry), role, MALFORMED))
            elif role and not self._may_stage(rights[role], row):
                rows.append(_security_row(row, role, REFUSAL))
            else:  # trusted, or SQLite's
                rows.append(row)
        return rows

    def _may_stage(self, rights: StagingRights, row: dict[str, Any]) -> bool:
        if rights.everything:
            return True
        source, event_type = row["event_source"], row["event_type"]
        if event_type == UNTRUSTED_PRODUCER_TYPE and source == audit_entry.SECURITY_SOURCE:
            return bool(rights.services)
        if event_type in self._outside:
            return not rights.services.isdisjoint(self._consumers[event_type])
        if not source.startswith(SERVICE_SOURCE_PREFIX):
            return False
        service = source.removeprefix(SERVICE_SOURCE_PREFIX)
        return service in rights.services and service in self._producers.get(event_type, ())

    async def _rights(self, session: AsyncSession, role: str) -> StagingRights:
        now = time.monotonic()
        known = self._known.get(role)
        if known is not None and now - known[0] < LOOKUP_SECONDS:
            return known[1]
        found = await (await session.connection()).execute(
            _STAGES_FOR,
            {
                "role": role,
                "sink": SCHEMA,
                "schema": SCHEMA,
                "table": audit_entry.AUDIT_STAGING_TABLE,
            },
        )
        services = frozenset(found.scalars())
        rights = _EVERYTHING if SCHEMA in services else StagingRights(False, services)
        self._known[role] = (now, rights)
        return rights


def _claims_of(text: str) -> dict[str, Any]:
    """What a malformed entry claims to be, as far as it can be read (bounded text)."""
    try:
        values = orjson.loads(text)
    except ValueError:
        values = None
    if not isinstance(values, dict):
        values = {}
    claims: dict[str, Any] = {}
    for name in ("event_type", "event_id", "event_source", "chain_id"):
        value = values.get(name)
        claims[name] = value[:256] if isinstance(value, str) else ""
    if not claims["event_id"]:  # two entries that claim nothing are still two records
        claims["event_id"] = f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"
    claims["recorded_at"] = None
    return claims


def _security_row(row: dict[str, Any], role: str, refusal: str) -> dict[str, Any]:
    """The record of a staged row refused (``refusal``), as a row to append."""
    record = audit_entry.security_record(
        event_type=row["event_type"],
        event_id=row["event_id"],
        source=row["event_source"],
        tenantid=row["chain_id"],
        producer=f"db:{role}" if role else None,
        refusal=refusal,
    )
    return audit_entry.prepare(record, received_at=row["recorded_at"]).as_row()
