"""The RabbitMQ topology, named once: the exchange, and per service a quorum queue, a delayed
retry queue and a dead-letter queue."""

from __future__ import annotations

from dataclasses import dataclass

from blume_contracts.envelope import EXCHANGE

QUEUE_PREFIX = "blume.share."
DELIVERY_LIMIT = 20
"""Quorum-queue redelivery limit: a message that kills its consumer this often is dead-lettered."""


@dataclass(frozen=True, slots=True)
class QueueSpec:
    service: str
    binding_keys: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{QUEUE_PREFIX}{self.service}"

    @property
    def retry_queue(self) -> str:
        return f"{self.name}.retry"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dlq"

    @property
    def exchange(self) -> str:
        return EXCHANGE
