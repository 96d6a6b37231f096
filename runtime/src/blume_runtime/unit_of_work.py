"""One unit of work: a transaction, the events it emits, and their publication after commit.

Workers (``HandlerContext``) and producers that are not handlers (the web gateway) write
their changes and their events the same way: the events go to the outbox in the same
transaction as what they describe; once committed, the relay publishes them from memory and
deletes their rows later, in bulk. If the broker refuses, the rows stay in the outbox and
the runtime's sweep publishes them.

The outbox rows go in on SQLAlchemy Core, all of a transaction's in one statement just before
it commits (``Database.transaction``): cheaper than the ORM's flush. A handler that queries the
outbox in its own transaction does not see its own rows yet, and an event emitted inside a
savepoint that is rolled back is still written; no caller does either.

Each event but a request is also staged for the audit store in the same statement, when the
database holds the audit sink's staging table (``stage_for_audit``): its record then exists
exactly when the change it describes does, with no copy to deliver to the sink.

Event ids are deterministic where an originating message exists (``origin``): a handler that
runs again after a rolled-back attempt emits the same ids, and consumers dedupe them. Where
none exists they are random: two opens of the same link are two events.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import structlog
from blume_contracts.audit_entry import prepare
from blume_contracts.envelope import CloudEvent, RawEvent, now
from blume_contracts.registry import EVENTS, spec_for
from blume_contracts.serialisation import event_body
from pydantic import BaseModel
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_runtime.db import STAGED_AUDIT, STAGED_OUTBOX, AuditRow, Database, OutboxMessage
from blume_runtime.settings import SERVICES_WITH_OWN_DATABASE
from blume_runtime.tracing import current_traceparent, link_request_span
from blume_runtime.transport import OutgoingMessage

_EVENT_IDS: Final = uuid.UUID("5f0d0e36-47c1-4c4f-9a53-4a3b8e0f2b61")

log = structlog.get_logger("outbox")


class Relay(Protocol):
    """The part of ``OutboxRelay`` a unit of work needs once committed."""

    async def publish_committed(self, messages: Sequence[OutgoingMessage]) -> None: ...


@dataclass(slots=True, kw_only=True)
class UnitOfWork:
    """A transaction (``session``) and the events staged in it, in order."""

    service: str
    """The producer: events are sourced ``/blume-share/<service>``."""
    session: AsyncSession
    origin: RawEvent | None = None
    """The message being handled, if any: ids derive from it, and the tenant and correlation
    of emitted events default to its own."""
    scope: str = ""
    """Set for hooks that run beside the handler (a retry notice), so their events get ids
    of their own, still stable when the hook runs again."""
    staged: list[OutgoingMessage] = field(default_factory=list)
    """What this unit staged, in order: published from memory once committed."""

    def emit(
        self,
        event_type: str,
        data: BaseModel,
        *,
        tenantid: str | None = None,
        correlationid: str | None = None,
        traceparent: str | None = None,
    ) -> CloudEvent[Any]:
        """Write an event to the outbox in this transaction; it is published after commit.

        The event carries ``traceparent`` if given (the gateway passes the share's, kept on
        its link or record entry, and the request's span links to it), else the current
        span's trace context: the handled event's trace.
        """
        model = spec_for(event_type).model
        if not isinstance(data, model):
            raise TypeError(f"{event_type} carries {model.__name__}, not {type(data).__name__}")
        tenantid = tenantid or (self.origin.tenantid if self.origin else None)
        correlationid = correlationid or (self.origin.correlationid if self.origin else None)
        if tenantid is None or correlationid is None:
            raise TypeError("an event with no originating message needs a tenant and correlation")
        event = CloudEvent[Any](
            id=self._next_id(event_type),
            source=f"/blume-share/{self.service}",
            type=event_type,
            time=now(),
            tenantid=tenantid,
            correlationid=correlationid,
            data=data,
            traceparent=traceparent or current_traceparent(),
        )
        if traceparent is not None:
            link_request_span(traceparent)
        message = outbox_message(event)
        row: dict[str, Any] = {
            "event_id": event.id,
            "routing_key": event_type,
            "body": message.body,
            "created_at": event.time,
        }
        rows: list[dict[str, Any]] | None = self.session.info.get(STAGED_OUTBOX)
        if rows is not None:  # inserted with the transaction's other rows before it commits
            rows.append(row)
        else:  # a session opened elsewhere than ``Database.transaction``: the ORM writes it
            self.session.add(OutboxMessage(**row))
        if event_type not in OUTSIDE_TYPES:
            stage_for_audit(self.session, event)
        self.staged.append(message)
        return event

    def _next_id(self, event_type: str) -> str:
        if self.origin is None:
            return str(uuid.uuid4())
        origin = self.origin
        seed = f"{self.service}|{origin.source}|{origin.id}|{event_type}|{len(self.staged)}"
        if self.scope:
            seed = f"{seed}|{self.scope}"
        return str(uuid.uuid5(_EVENT_IDS, seed))


OUTSIDE_TYPES: Final = frozenset(name for name, spec in EVENTS.items() if spec.outside)
"""Outside types (requests) are audited as they arrive, with their verified publisher as the
requester, whoever emits them: each consumer of ours stages a request's row in the
transaction that claims it (``blume_runtime.worker``), so the request's record comes before
those of the events it causes, and the audit sink stages the copy it receives."""
AUDITED_FROM_THE_EXCHANGE: Final = tuple(
    sorted(
        name
        for name, spec in EVENTS.items()
        if spec.outside or not set(spec.producers) & set(SERVICES_WITH_OWN_DATABASE)
    )
)
"""The types the audit sink consumes over the exchange (its binding keys): those no service
of ours stages in its own transaction. Outside requests, and what only producers without a
database of ours publish (the operators' tools)."""


def stage_for_audit(
    session: AsyncSession, event: RawEvent, *, broker_user: str | None = None
) -> bool:
    """Stage ``event`` for the audit store in ``session``'s transaction; False if this
    transaction's database does not stage audit rows (the sink then records the copy it
    receives over the exchange).

    The event is prepared now (secrets fingerprinted: nothing secret is staged), and its row
    is written with the transaction's outbox rows just before the commit
    (``Database.transaction``). ``broker_user``: the verified publisher of an outside request.
    """
    rows: list[AuditRow] | None = session.info.get(STAGED_AUDIT)
    if rows is None:
        return False
    entry = prepare(event, broker_user=broker_user)
    rows.append((entry.event_source, entry.event_id, entry.recorded_at, entry.to_json()))
    return True


def outbox_message(event: CloudEvent[Any]) -> OutgoingMessage:
    return OutgoingMessage(event.type, event_body(event), event.id)


async def publish_committed(relay: Relay, messages: Sequence[OutgoingMessage]) -> str | None:
    """Publish what a committed unit staged; on failure the name of the error, else None.

    A failure loses nothing: the rows are committed and the outbox sweep publishes them.
    """
    try:
        await relay.publish_committed(messages)
    except Exception as error:  # noqa: BLE001 - committed rows wait for the outbox sweep
        return type(error).__name__
    return None


@dataclass(frozen=True, slots=True)
class UnitsOfWork:
    """Opens units of work with no originating message (a web request, a CLI command)."""

    service: str
    db: Database
    relay: Relay

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """A transaction; commit, then publish what it staged."""
        async with self.db.transaction() as session:
            work = UnitOfWork(service=self.service, session=session)
            yield work
        if failed := await publish_committed(self.relay, work.staged):
            log.warning("relay failed; the outbox sweep will publish", error_type=failed)
