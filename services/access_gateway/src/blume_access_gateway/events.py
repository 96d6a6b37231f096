"""The gateway as a producer of events.

It writes its changes and events through the runtime's unit of work
(``blume_runtime.unit_of_work``): one transaction, then the relay; ids are random, since no
originating message exists (two opens of the same link are two events).
"""

from __future__ import annotations

from typing import Final, Protocol

from blume_runtime.unit_of_work import UnitOfWork
from pydantic import BaseModel

UNKNOWN_TENANT: Final = "_unknown"
"""The envelope tenant of denials for tokens that match no link (no tenant id can start
with an underscore, so this chain is never a tenant's)."""


class ShareOrigin(Protocol):
    """What ties an event to its share's chain: a projected link or entry, or a viewer's
    scope built from one."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def correlation_id(self) -> str: ...

    @property
    def traceparent(self) -> str | None: ...


def emit_for(work: UnitOfWork, event_type: str, data: BaseModel, origin: ShareOrigin) -> None:
    """Emit in the share's envelope (tenant, correlation, trace), so the audit trail and the
    trace join the share's other events."""
    work.emit(
        event_type,
        data,
        tenantid=origin.tenant_id,
        correlationid=origin.correlation_id,
        traceparent=origin.traceparent,
    )
