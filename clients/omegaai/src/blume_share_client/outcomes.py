"""Following what became of each request: a durable queue of the outcome events, consumed
with kombu (``ConsumerMixin``: it reconnects by itself after a lost connection).

Topology, declared by ``declare()`` and again on every (re)connection, all named after the
caller's queue (with the shipped ``omegaai`` broker user the name must start ``omegaai.``):

    blume.share (topic) ──share.accepted|rejected|completed|failed|revoked──▶ <queue>
    <queue> (quorum) ──rejected, or returned more than delivery_limit times──▶
        <queue>.dlx (fanout) ──▶ <queue>.dlq (quorum)

Each delivery is settled exactly once: acknowledged after the callback returns; a body that
is not an outcome event (not JSON, not a CloudEvent, another type, data that breaks the
contract) is rejected without requeue, so the broker dead-letters it and the queue moves on;
a callback that raises gets the message back after ``redelivery_delay`` seconds, up to the
queue's delivery limit, after which the broker dead-letters it too. Delivery is at least
once: make the callback idempotent on ``outcome.id``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Final

from amqp.exceptions import AMQPError
from blume_contracts.envelope import EXCHANGE, CloudEvent, RawEvent
from blume_contracts.events import (
    Contract,
    ShareAccepted,
    ShareCompleted,
    ShareFailed,
    ShareRejected,
    ShareRevoked,
    ShareTrackingUpdated,
)
from kombu.connection import Connection
from kombu.entity import Exchange, Queue, binding
from kombu.exceptions import KombuError
from kombu.message import Message
from kombu.mixins import ConsumerMixin
from pydantic import ValidationError

from blume_share_client.errors import BlumeShareError

OutcomeData = (
    ShareAccepted
    | ShareRejected
    | ShareCompleted
    | ShareFailed
    | ShareRevoked
    | ShareTrackingUpdated
)
Outcome = CloudEvent[OutcomeData]
"""An outcome event: ``outcome.data`` is the contract model, ``outcome.correlationid`` the
request's correlation id, ``outcome.id`` the event's id (unique: the dedupe key)."""

OUTCOME_MODELS: Final[dict[str, type[Contract]]] = {
    "share.accepted": ShareAccepted,
    "share.rejected": ShareRejected,
    "share.completed": ShareCompleted,
    "share.failed": ShareFailed,
    "share.revoked": ShareRevoked,
    "share.tracking.updated": ShareTrackingUpdated,
}
_LOG: Final = logging.getLogger("blume_share_client.outcomes")
_SHOWN_ID_LENGTH: Final = 128


class TopologyError(BlumeShareError):
    """The queue could not be declared or bound: a permission, a name the broker user may not
    use, or an existing queue declared with other arguments."""


class UnreadableOutcomeError(ValueError):
    """A delivery that is not an outcome event; the reason names no value."""


def parse_outcome(body: bytes) -> Outcome:
    """The outcome event in ``body``, its data validated against the contract model."""
    try:
        event = RawEvent.model_validate_json(body)
    except ValidationError:
        raise UnreadableOutcomeError("not a CloudEvent in JSON") from None
    model = OUTCOME_MODELS.get(event.type)
    if model is None:
        raise UnreadableOutcomeError(f"not an outcome event type: {event.type}")
    try:
        data = model.model_validate(event.data)
    except ValidationError:
        raise UnreadableOutcomeError(f"data breaks the {event.type} contract") from None
    return Outcome.model_validate({**dict(event), "data": data})


class OutcomeConsumer(ConsumerMixin):
    """Consumes the outcome events from the caller's durable queue until ``stop()``.

    ``run()`` blocks (run it in a thread of its own); ``callback`` gets each ``Outcome``.
    """

    def __init__(
        self,
        amqp_url: str,
        queue: str,
        callback: Callable[[Outcome], object],
        *,
        prefetch: int = 16,
        delivery_limit: int = 10,
        redelivery_delay: float = 1.0,
        connect_timeout: float = 10.0,
        heartbeat: float = 30.0,
    ) -> None:
        # Heartbeats (checked every second by ConsumerMixin's loop) notice a connection that
        # died silently, which would otherwise leave the consumer waiting for ever.
        self.connection = Connection(amqp_url, connect_timeout=connect_timeout, heartbeat=heartbeat)
        self._callback = callback
        self._prefetch = prefetch
        self._redelivery_delay = redelivery_delay
        self._stopping = threading.Event()
        topic = Exchange(EXCHANGE, "topic", durable=True, no_declare=True)
        dead_letters = Exchange(f"{queue}.dlx", "fanout", durable=True)
        self.queue = Queue(
            queue,
            bindings=[binding(topic, routing_key=event_type) for event_type in OUTCOME_MODELS],
            durable=True,
            queue_arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": delivery_limit,
                "x-dead-letter-exchange": dead_letters.name,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        self.dead_letter_queue = Queue(
            f"{queue}.dlq",
            dead_letters,
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        )

    def declare(self) -> None:
        """Declare the queues and bindings now; raise ``TopologyError`` if the broker
        refuses (``run()`` would otherwise keep retrying a mistake that cannot heal)."""
        try:
            with self.connection.clone() as connection:
                channel = connection.channel()
                self._declare_on(channel)
        except (KombuError, AMQPError, OSError) as error:
            raise TopologyError(f"{self.queue.name}: {error}") from error

    def run(self, _tokens: int = 1, **kwargs: Any) -> None:
        """Declare, then consume until ``stop()``, reconnecting after connection losses."""
        self.declare()
        ConsumerMixin.run(self, _tokens, **kwargs)

    def stop(self) -> None:
        """Finish the message in hand and return from ``run()`` (within about a second)."""
        self.should_stop = True
        self._stopping.set()

    def get_consumers(self, consumer_class: Any, channel: Any) -> list[Any]:
        self._declare_on(channel)
        return [
            consumer_class(
                queues=[self.queue],
                on_message=self._on_message,
                prefetch_count=self._prefetch,
                auto_declare=False,
            )
        ]

    def _declare_on(self, channel: Any) -> None:
        self.dead_letter_queue.bind(channel).declare()
        self.queue.bind(channel).declare()

    def _on_message(self, message: Message) -> None:
        try:
            outcome = parse_outcome(message.body)
        except UnreadableOutcomeError as problem:
            _LOG.warning(
                "outcome dead-lettered: %s (message_id %.*r)",
                problem,
                _SHOWN_ID_LENGTH,
                message.properties.get("message_id"),
            )
            message.reject(requeue=False)
            return
        try:
            self._callback(outcome)
        except Exception:  # noqa: BLE001 - whatever the caller's code raises, the queue moves on
            _LOG.exception(
                "outcome callback failed, the message goes back to the queue: %s %s (share %s)",
                outcome.type,
                outcome.id,
                outcome.data.share_id,
            )
            self._stopping.wait(self._redelivery_delay)
            message.requeue()
            return
        message.ack()
