"""The product's Prometheus metrics, named once; served on the ops port's ``/metrics``.

Labels carry no PHI and no secrets: service and event type names, outcome and cause
codes, route templates (never raw paths, which hold tokens). The alerts in
``deploy/k8s`` and the dashboard refer to these names.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Final

from prometheus_client import Counter, Gauge, Histogram, Info

NAMESPACE: Final = "blume"

MESSAGES_HANDLED: Final = Counter(
    "messages_handled",
    "Deliveries settled, by service, event type and outcome (ack, retry, dead_letter).",
    ["service", "event_type", "outcome"],
    namespace=NAMESPACE,
)
HANDLER_DURATION: Final = Histogram(
    "handler_duration_seconds",
    "Time from receiving a delivery to settling it.",
    ["service", "event_type"],
    namespace=NAMESPACE,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RETRIES: Final = Counter(
    "retries",
    "Deliveries scheduled for a delayed retry, by service and error class.",
    ["service", "error_class"],
    namespace=NAMESPACE,
)
DEAD_LETTERS: Final = Counter(
    "dead_letters",
    "Deliveries dead-lettered, by service and cause.",
    ["service", "cause"],
    namespace=NAMESPACE,
)
OUTBOX_BACKLOG: Final = Gauge(
    "outbox_backlog",
    "Outbox rows committed but not yet published.",
    ["service"],
    namespace=NAMESPACE,
)
OUTBOX_OLDEST_AGE: Final = Gauge(
    "outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row (0 when empty).",
    ["service"],
    namespace=NAMESPACE,
)
CONSUMERS_ATTACHED: Final = Gauge(
    "consumers_attached",
    "1 while this process has a live consumer on the queue, else 0.",
    ["service", "queue"],
    namespace=NAMESPACE,
)
EMAILS: Final = Counter(
    "emails",
    "Emails by kind (link, blume, sign_in_code) and outcome (sent, failed, deferred).",
    ["kind", "outcome"],
    namespace=NAMESPACE,
)
LINK_EVENTS: Final = Counter(
    "link_events",
    "Recipient link events: opened, accessed, denied (with the denial reason).",
    ["event", "reason"],
    namespace=NAMESPACE,
)
AUDIT_RECORDS_SEALED: Final = Counter(
    "audit_records_sealed",
    "Audit records appended to a hash chain.",
    namespace=NAMESPACE,
)
AUDIT_SEALING_LAG: Final = Gauge(
    "audit_sealing_lag_seconds",
    "Age of the oldest staged audit record not yet sealed (0 when none wait).",
    namespace=NAMESPACE,
)
HTTP_REQUESTS: Final = Counter(
    "http_requests",
    "HTTP requests by route template and status code.",
    ["route", "status"],
    namespace=NAMESPACE,
)
BUILD_INFO: Final = Info("build", "The running release.", namespace=NAMESPACE)


def _release() -> str:
    try:
        return version("blume-share-runtime")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


BUILD_INFO.info({"version": _release(), "python": platform.python_version()})
