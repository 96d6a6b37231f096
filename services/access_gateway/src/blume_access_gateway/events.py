"""Writing the gateway's changes and events together: one transaction, then the relay.

Events go to the outbox in the same transaction as what they describe; once committed,
the relay publishes them from memory (and deletes their rows later, in bulk). If the broker
is down the request still succeeds: the rows stay in the outbox and the runtime's sweep
publishes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, Protocol

import structlog
from blume_runtime.db import Database
from blume_runtime.metrics import LINK_EVENTS
from blume_runtime.service import outbox_message, stage_event
from blume_runtime.tracing import link_request_span
from blume_runtime.transport import OutgoingMessage
from pydantic import BaseModel
from sqlmodel.ext.asyncio.session import AsyncSession

PRODUCER: Final = "access_gateway"
UNKNOWN_TENANT: Final = "_unknown"
"""The envelope tenant of denials for tokens that match no link (no tenant id can start
with an underscore, so this chain is never a tenant's)."""

LINK_EVENT_TYPES: Final = {
    "share.link.opened": "opened",
    "share.link.accessed": "accessed",
    "share.link.denied": "denied",
}

log = structlog.get_logger(PRODUCER)


class Relay(Protocol):
    """The part of the runtime's ``OutboxRelay`` the gateway uses."""

    async def publish_committed(self, messages: Sequence[OutgoingMessage]) -> None: ...


@dataclass(slots=True)
class UnitOfWork:
    session: AsyncSession
    staged: list[OutgoingMessage] = field(default_factory=list)

    def emit(
        self,
        event_type: str,
        data: BaseModel,
        *,
        tenant_id: str,
        correlation_id: str,
        traceparent: str | None = None,
    ) -> None:
        """Stage an event. ``traceparent`` is the share's trace (from its link or record
        entry): the event joins that trace, and the request's own span links to it."""
        if event_type in LINK_EVENT_TYPES:
            reason = str(getattr(data, "reason", "") or "")
            LINK_EVENTS.labels(event=LINK_EVENT_TYPES[event_type], reason=reason).inc()
        event = stage_event(
            self.session,
            event_type,
            data,
            producer=PRODUCER,
            tenantid=tenant_id,
            correlationid=correlation_id,
            traceparent=traceparent,
        )
        link_request_span(traceparent)
        self.staged.append(outbox_message(event))


@dataclass(frozen=True, slots=True)
class EventWriter:
    db: Database
    relay: Relay

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        async with self.db.transaction() as session:
            work = UnitOfWork(session)
            yield work
        await self.publish(work.staged)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        try:
            await self.relay.publish_committed(messages)
        except Exception as error:  # noqa: BLE001 - committed rows wait for the outbox sweep
            log.warning(
                "relay failed; the outbox sweep will publish", error_type=type(error).__name__
            )
