"""The product's Prometheus metrics, named once; served on the ops port's ``/metrics``.

Labels carry no PHI and no secrets: service and event type names, outcome and cause
codes, route templates (never raw paths, which hold tokens). The alerts in
``deploy/k8s`` and the dashboard refer to these names.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Final

from prometheus_client import Counter, Gauge, Histogram, Info

NAMESPACE: Final = "blume"


def _counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
    return Counter(name, documentation, labels, namespace=NAMESPACE)


def _gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
    return Gauge(name, documentation, labels, namespace=NAMESPACE)


MESSAGES_HANDLED: Final = _counter(
    "messages_handled",
    "Deliveries settled, by service, event type and outcome (ack, retry, dead_letter).",
    ["service", "event_type", "outcome"],
)
HANDLER_DURATION: Final = Histogram(
    "handler_duration_seconds",
    "Time from receiving a delivery to settling it.",
    ["service", "event_type"],
    namespace=NAMESPACE,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RETRIES: Final = _counter(
    "retries",
    "Deliveries scheduled for a delayed retry, by service and error class.",
    ["service", "error_class"],
)
DEAD_LETTERS: Final = _counter(
    "dead_letters", "Deliveries dead-lettered, by service and cause.", ["service", "cause"]
)
# What a share costs the database, counted (every engine of this process): the bench
# divides them by the shares it sent, and tests/test_share_costs.py bounds them.
DB_TRANSACTIONS, DB_STATEMENTS, DB_CHECKOUTS = (
    _counter(f"db_{counted}", f"{what} (every engine of this process).")
    for counted, what in (
        ("transactions", "Database transactions this process committed"),
        ("statements", "SQL statements this process sent to the database"),
        ("checkouts", "Connections taken from the pool"),
    )
)
OUTBOX_BACKLOG: Final = _gauge(
    "outbox_backlog", "Outbox rows committed but not yet published.", ["service"]
)
OUTBOX_OLDEST_AGE: Final = _gauge(
    "outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row (0 when empty).",
    ["service"],
)
CONSUMERS_ATTACHED: Final = _gauge(
    "consumers_attached",
    "1 while this process has a live consumer on the queue, else 0.",
    ["service", "queue"],
)
EMAILS: Final = _counter(
    "emails",
    "Emails by kind (link, blume, sign_in_code) and outcome (sent, failed, deferred).",
    ["kind", "outcome"],
)
LINK_EVENTS: Final = _counter(
    "link_events",
    "Recipient link events: opened, accessed, denied (with the denial reason).",
    ["event", "reason"],
)
AUDIT_RECORDS_SEALED: Final = _counter(
    "audit_records_sealed", "Audit records appended to a hash chain."
)
AUDIT_SEALING_LAG: Final = _gauge(
    "audit_sealing_lag_seconds",
    "Age of the oldest staged audit record not yet sealed (0 when none wait).",
)
HTTP_REQUESTS: Final = _counter(
    "http_requests", "HTTP requests by route template and status code.", ["route", "status"]
)
BUILD_INFO: Final = Info("build", "The running release.", namespace=NAMESPACE)


def _release() -> str:
    try:
        return version("blume-share-runtime")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


BUILD_INFO.info({"version": _release(), "python": platform.python_version()})
