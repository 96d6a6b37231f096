"""Putting corpus cases on a real broker with pika, and reading back what became of them.

Shared by the broker-level tests and the fault-injection suite. A case's producer decides
the connection and the AMQP ``user_id`` (which RabbitMQ checks against the connection's
user): none for ``ANONYMOUS``, a broker user of no service for ``STRANGER``, and the
services' own user for ``SERVICE`` (single-user mode, as in the tests and the quick start).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pika  # type: ignore[import-untyped]
from pika.adapters.blocking_connection import BlockingChannel  # type: ignore[import-untyped]

from tests.bad_input.corpus import Case, Producer

EXCHANGE: Final = "blume.share"
CAUSE_HEADER: Final = "x-blume-dead-letter-cause"


@dataclass(frozen=True, slots=True)
class Publisher:
    """A confirming channel, and the ``user_id`` it stamps (None: it stamps none)."""

    channel: BlockingChannel
    user_id: str | None


def properties_of(case: Case, user_id: str | None) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=case.content_type,
        content_encoding=case.content_encoding,
        message_id=case.message_id,
        headers=dict(case.headers) or None,
        user_id=user_id,
        delivery_mode=pika.DeliveryMode.Persistent,
    )


def publish_case(publishers: Mapping[Producer, Publisher], case: Case) -> None:
    """Publish one case on ``blume.share`` by its routing key, confirmed by the broker."""
    publisher = publishers[case.producer]
    publisher.channel.basic_publish(
        EXCHANGE,
        case.routing_key,
        case.body,
        properties_of(case, publisher.user_id),
        mandatory=True,
    )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    service: str
    body: bytes
    cause: str | None


def drain_dead_letters(channel: BlockingChannel, service: str) -> list[DeadLetter]:
    """Take every message off ``blume.share.<service>.dlq`` (acknowledged: gone)."""
    taken: list[DeadLetter] = []
    while True:
        method, properties, body = channel.basic_get(f"blume.share.{service}.dlq", auto_ack=True)
        if method is None:
            return taken
        headers: dict[str, Any] = properties.headers or {}
        cause = headers.get(CAUSE_HEADER)
        taken.append(
            DeadLetter(service, body, cause.decode() if isinstance(cause, bytes) else cause)
        )


@dataclass(frozen=True, slots=True)
class QueueCounts:
    name: str
    ready: int
    unacknowledged: int


def queue_counts(vhost: str) -> list[QueueCounts]:
    """Every queue of ``vhost`` with its ready and unacknowledged messages (rabbitmqctl)."""
    listed = subprocess.run(
        [
            "rabbitmqctl",
            "list_queues",
            "--quiet",
            "--no-table-headers",
            "-p",
            vhost,
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    counts = []
    for line in listed.stdout.splitlines():
        name, ready, unacknowledged = line.split()
        counts.append(QueueCounts(name, int(ready), int(unacknowledged)))
    return counts
