"""The workers this distribution runs, by name."""

from __future__ import annotations

from typing import Final

from blume_audit_sink import service as audit_sink
from blume_link_issuer import service as link_issuer
from blume_notifier import service as notifier
from blume_publisher import service as blume_publisher
from blume_runtime.app import ServiceFactory
from blume_share_dispatcher import service as share_dispatcher

SERVICES: Final[dict[str, ServiceFactory]] = {
    share_dispatcher.NAME: share_dispatcher.build,
    link_issuer.NAME: link_issuer.build,
    blume_publisher.NAME: blume_publisher.build,
    notifier.NAME: notifier.build,
    audit_sink.NAME: audit_sink.build,
}

GATEWAY: Final = "access_gateway"
"""Not a queue worker: the recipient-facing web server, which ``run`` serves over HTTP."""
RUNNABLE: Final = (*SERVICES, GATEWAY)
