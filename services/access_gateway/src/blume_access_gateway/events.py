"""The gateway as a producer of events.

It writes its changes and events through the runtime's unit of work
(``blume_runtime.unit_of_work``): one transaction, then the relay; ids are random, since no
originating message exists (two opens of the same link are two events). Each event it
stages is counted and linked from the request's span (``observe_emit``).
"""

from __future__ import annotations

from typing import Any, Final

from blume_contracts.envelope import CloudEvent
from blume_runtime.metrics import LINK_EVENTS
from blume_runtime.tracing import current_traceparent, link_request_span

UNKNOWN_TENANT: Final = "_unknown"
"""The envelope tenant of denials for tokens that match no link (no tenant id can start
with an underscore, so this chain is never a tenant's)."""

LINK_EVENT_TYPES: Final = {
    "share.link.opened": "opened",
    "share.link.accessed": "accessed",
    "share.link.denied": "denied",
}


def observe_emit(event: CloudEvent[Any]) -> None:
    """Count a link event by reason; link the request's span to the share's trace."""
    if event.type in LINK_EVENT_TYPES:
        reason = str(getattr(event.data, "reason", "") or "")
        LINK_EVENTS.labels(event=LINK_EVENT_TYPES[event.type], reason=reason).inc()
    if event.traceparent != current_traceparent():  # the share's trace, not the request's
        link_request_span(event.traceparent)
