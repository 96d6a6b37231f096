"""The workers this distribution runs, by name: the one place that wires the services."""

from __future__ import annotations

from typing import Final

import blume_access_gateway as access_gateway
import blume_audit_sink as audit_sink
import blume_link_issuer as link_issuer
import blume_notifier as notifier
import blume_publisher
import blume_share_dispatcher as share_dispatcher
from blume_runtime.app import ServiceFactory

SERVICES: Final[dict[str, ServiceFactory]] = {
    share_dispatcher.NAME: share_dispatcher.build,
    link_issuer.NAME: link_issuer.build,
    blume_publisher.NAME: blume_publisher.build,
    notifier.NAME: notifier.build,
    audit_sink.NAME: audit_sink.build,
}
"""The queue workers, each scaled on its queue."""

GATEWAY: Final = access_gateway.NAME
"""The recipient-facing web server, which ``run`` serves over HTTP (unless it only runs until
idle), and a worker too: it consumes the events its projections are made of."""
WORKERS: Final[dict[str, ServiceFactory]] = {**SERVICES, GATEWAY: access_gateway.build}
"""Everything that consumes a queue of its own."""
RUNNABLE: Final = tuple(WORKERS)
