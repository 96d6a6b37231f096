"""Running the library's outcome consumer in a thread and watching the broker with pika (an
AMQP client the library does not use), for the tests on the real RabbitMQ."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pika
from blume_share_client import Outcome, OutcomeConsumer


@dataclass
class Collected:
    """What the callback was given, in order; waits wake up as outcomes arrive."""

    outcomes: list[Outcome] = field(default_factory=list)
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def add(self, outcome: Outcome) -> None:
        with self._arrived:
            self.outcomes.append(outcome)
            self._arrived.notify_all()

    def of(self, event_type: str, share_id: str | None = None) -> list[Outcome]:
        with self._arrived:
            return [
                outcome
                for outcome in self.outcomes
                if outcome.type == event_type
                and (share_id is None or outcome.data.share_id == share_id)
            ]

    def wait_for(self, event_type: str, share_id: str | None = None, within: float = 60) -> Outcome:
        deadline = time.monotonic() + within
        with self._arrived:
            while not (found := self.of(event_type, share_id)):
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(outcome.type, outcome.data.share_id) for outcome in self.outcomes]
                    raise AssertionError(f"no {event_type} for {share_id} in {within}s: {seen}")
                self._arrived.wait(left)
        return found[0]


@contextmanager
def consuming(
    amqp_url: str,
    queue: str,
    callback: Callable[[Outcome], object] | None = None,
    **options: Any,
) -> Iterator[tuple[OutcomeConsumer, Collected]]:
    """An ``OutcomeConsumer`` on ``queue``, declared before this yields (so nothing published
    afterwards is missed) and stopped on the way out, its thread joined."""
    collected = Collected()
    consumer = OutcomeConsumer(amqp_url, queue, callback or collected.add, **options)
    consumer.declare()
    thread = threading.Thread(target=consumer.run, name=f"outcomes-{queue}", daemon=True)
    thread.start()
    try:
        yield consumer, collected
    finally:
        consumer.stop()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the consumer did not stop"


def ready_messages(amqp_url: str, queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare: the broker's own count, no stats lag)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        declared = connection.channel().queue_declare(queue, passive=True)
        return int(declared.method.message_count)
    finally:
        connection.close()


def until(condition: Callable[[], bool], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within}s")
        time.sleep(0.05)
