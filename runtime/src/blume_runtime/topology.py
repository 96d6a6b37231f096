"""The RabbitMQ topology, named once, and how it is declared.

Per service ``<svc>``:

- ``blume.share.<svc>``: the quorum queue the service consumes, bound to the topic
  exchange ``blume.share`` by its event types, and to its private exchange by ``return``
  (retries coming back) and ``replay`` (operator replays);
- ``blume.share.<svc>.private``: a direct exchange only the service's own broker user and
  the ops user may write to, so nobody else can put a message on the service's delay
  queues or DLQ, or on the service queue other than through ``blume.share``;
- ``blume.share.<svc>.delay.<n>s``: one quorum queue per delay tier (1, 2, 4, ... seconds,
  up to the longest power of two not beyond ``BLUME_RETRY_MAX_DELAY_SECONDS``). Every message in a
  tier has the same TTL, so expiry order is arrival order and no message waits behind a
  longer one; each tier dead-letters back to the service queue;
- ``blume.share.<svc>.dlq``: the dead-letter queue, bound to the private exchange by
  ``dead``; the service queue's own dead-lettering (delivery limit) lands there too.

Shared by all services:

- ``blume.share.unrouted`` (``UNROUTED_EXCHANGE``): a durable fanout exchange, the alternate
  exchange of ``blume.share``: a message ``blume.share`` routes to no queue goes there
  instead of being dropped. Only a spec with ``binds_unrouted`` (the audit sink's) binds its
  queue to it (key ``""``). It is linked to ``blume.share`` by a broker policy
  (``UNROUTED_POLICY``, exchanges only, pattern ``^blume\\.share$``), never by an
  ``alternate-exchange`` argument: ``blume.share`` already exists in deployments, declared
  without arguments, and declaring it again with different arguments is refused. The policy
  is in ``deploy/rabbitmq/definitions.json``; on a broker deployed before it, an operator
  sets it (docs/operations.md). RabbitMQ applies one policy per object, the one of highest
  priority; the at-least-once policy applies to queues only, so the two never compete.

Service and delay queues dead-letter at least once (``x-dead-letter-strategy``, which needs
``x-overflow: reject-publish``). A queue an older release declared without those arguments
refuses the new declaration; it is then declared passively, with one warning naming the
runbook, and the broker policy shipped in ``deploy/rabbitmq/definitions.json`` supplies them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue
from blume_contracts.envelope import EXCHANGE

QUEUE_PREFIX: Final = "blume.share."
DELIVERY_LIMIT: Final = 20
"""Quorum-queue redelivery limit: a message that kills its consumer this often is dead-lettered."""
DEAD_KEY: Final = "dead"
RETURN_KEY: Final = "return"
REPLAY_KEY: Final = "replay"
RUNBOOK: Final = "docs/operations.md, 'Migrating a deployed broker'"
AT_LEAST_ONCE_POLICY: Final = {
    "dead-letter-strategy": "at-least-once",
    "overflow": "reject-publish",
}
"""The policy keys that give a queue declared by an older release the new guarantees."""
_AT_LEAST_ONCE_ARGUMENTS: Final = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}
_QUORUM: Final = {"x-queue-type": "quorum"}
UNROUTED_EXCHANGE: Final = f"{EXCHANGE}.unrouted"
"""The alternate exchange of ``blume.share`` (fanout): what no binding of it matches."""
UNROUTED_POLICY_NAME: Final = "blume-share-unrouted"
UNROUTED_POLICY_PATTERN: Final = f"^{re.escape(EXCHANGE)}$"
UNROUTED_POLICY: Final = {"alternate-exchange": UNROUTED_EXCHANGE}
"""The policy definition (exchanges only, ``UNROUTED_POLICY_PATTERN``) that makes
``UNROUTED_EXCHANGE`` the alternate exchange of ``blume.share``."""

log = structlog.get_logger("topology")


def delay_tiers(max_delay_seconds: float) -> tuple[int, ...]:
    """1, 2, 4, ... seconds, up to the longest power of two not beyond ``max_delay_seconds``."""
    tiers = [1]
    while tiers[-1] * 2 <= max_delay_seconds:
        tiers.append(tiers[-1] * 2)
    return tuple(tiers)


def tier_for(delay_seconds: float, tiers: Sequence[int]) -> int:
    """The longest tier that is not longer than the delay (1 s for shorter delays).

    With doubling tiers a delay of d >= 1 s waits more than d/2 and at most d: a retry never
    waits longer than the backoff asked (recovery after an outage is not delayed by rounding
    up), and the backoff's full jitter already spreads the retries.
    """
    return next((tier for tier in reversed(tiers) if tier <= delay_seconds), tiers[0])


def delay_key(tier: int) -> str:
    return f"delay.{tier}s"


@dataclass(frozen=True, slots=True)
class QueueSpec:
    service: str
    binding_keys: tuple[str, ...]
    binds_unrouted: bool = False
    """Also bind the queue to ``UNROUTED_EXCHANGE``: it gets what ``blume.share`` routes to
    no queue (once), and nothing that reached some queue."""

    @property
    def name(self) -> str:
        return f"{QUEUE_PREFIX}{self.service}"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dlq"

    @property
    def private_exchange(self) -> str:
        return f"{self.name}.private"

    def delay_queue(self, tier: int) -> str:
        return delay_queue_name(self.name, tier)


def delay_queue_name(queue: str, tier: int) -> str:
    """Where a message of ``queue`` waits ``tier`` seconds before it is retried."""
    return f"{queue}.delay.{tier}s"


def service_queue_arguments(spec: QueueSpec) -> dict[str, Any]:
    return {
        **_QUORUM,
        **_AT_LEAST_ONCE_ARGUMENTS,
        "x-dead-letter-exchange": spec.private_exchange,
        "x-dead-letter-routing-key": DEAD_KEY,
        "x-delivery-limit": DELIVERY_LIMIT,
    }


def delay_queue_arguments(spec: QueueSpec, tier: int) -> dict[str, Any]:
    return {
        **_QUORUM,
        **_AT_LEAST_ONCE_ARGUMENTS,
        "x-message-ttl": tier * 1000,
        "x-dead-letter-exchange": spec.private_exchange,
        "x-dead-letter-routing-key": RETURN_KEY,
    }


DEAD_LETTER_QUEUE_ARGUMENTS: Final = dict(_QUORUM)
"""Nothing dead-letters out of a DLQ; earlier releases declared it the same way."""


@dataclass(frozen=True, slots=True)
class Binding:
    exchange: str
    queue: str
    key: str


@dataclass(frozen=True, slots=True)
class Layout:
    """Everything a set of services needs on the broker besides ``blume.share``, by name:
    what ``declare`` creates at start-up, and what the broker definitions create before it."""

    private_exchanges: tuple[str, ...]
    fanout_exchanges: tuple[str, ...]
    """``UNROUTED_EXCHANGE`` when some spec binds it, else nothing."""
    queues: tuple[tuple[str, dict[str, Any]], ...]
    """Each queue's name and its declaration arguments, in the order they are declared."""
    bindings: tuple[Binding, ...]


def layout(specs: Iterable[QueueSpec], tiers: Sequence[int]) -> Layout:
    """Each spec's private exchange, dead-letter, delay and service queues and bindings."""
    exchanges: list[str] = []
    queues: list[tuple[str, dict[str, Any]]] = []
    bindings: list[Binding] = []
    for spec in specs:
        private = spec.private_exchange
        exchanges.append(private)
        queues.append((spec.dead_letter_queue, dict(DEAD_LETTER_QUEUE_ARGUMENTS)))
        bindings.append(Binding(private, spec.dead_letter_queue, DEAD_KEY))
        for tier in tiers:
            queues.append((spec.delay_queue(tier), delay_queue_arguments(spec, tier)))
            bindings.append(Binding(private, spec.delay_queue(tier), delay_key(tier)))
        queues.append((spec.name, service_queue_arguments(spec)))
        bindings += [Binding(private, spec.name, key) for key in (RETURN_KEY, REPLAY_KEY)]
        bindings += [Binding(EXCHANGE, spec.name, key) for key in spec.binding_keys]
        if spec.binds_unrouted:
            bindings.append(Binding(UNROUTED_EXCHANGE, spec.name, ""))
    unrouted = any(binding.exchange == UNROUTED_EXCHANGE for binding in bindings)
    fanouts = (UNROUTED_EXCHANGE,) if unrouted else ()
    return Layout(tuple(exchanges), fanouts, tuple(queues), tuple(bindings))


class _Declarations:
    """Declarations on one connection: a refused declaration costs its channel, not the rest."""

    def __init__(self, connection: AbstractConnection, warned: set[str]) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None
        self._warned = warned

    async def _open(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=False)
        return self._channel

    async def shared_exchange(
        self, name: str = EXCHANGE, kind: aio_pika.ExchangeType = aio_pika.ExchangeType.TOPIC
    ) -> AbstractExchange:
        """``blume.share`` (or the unrouted fanout): looked up first, so users without
        configure rights need none; declared durable if missing."""
        try:
            return await (await self._open()).declare_exchange(name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return await (await self._open()).declare_exchange(name, kind, durable=True)

    async def private_exchange(self, name: str) -> AbstractExchange:
        return await (await self._open()).declare_exchange(
            name, aio_pika.ExchangeType.DIRECT, durable=True
        )

    async def queue(self, name: str, arguments: dict[str, Any]) -> AbstractQueue:
        try:
            return await (await self._open()).declare_queue(name, durable=True, arguments=arguments)
        except aio_pika.exceptions.ChannelPreconditionFailed:
            queue = await (await self._open()).declare_queue(name, passive=True)
            if name not in self._warned:
                self._warned.add(name)
                log.warning(
                    "queue declared by an earlier release; using it as it is",
                    queue=name,
                    runbook=RUNBOOK,
                )
            return queue

    async def bind(self, binding: Binding) -> None:
        """By names, on the channel open now (a refused declaration closed an earlier one)."""
        queue = await (await self._open()).get_queue(binding.queue, ensure=False)
        await queue.bind(binding.exchange, binding.key)


async def declare(
    url: str, specs: Iterable[QueueSpec], tiers: Sequence[int], warned: set[str]
) -> None:
    """Declare ``blume.share`` and every spec's exchange, queues and bindings (idempotently),
    and ``blume.share.unrouted`` (durable fanout) when some spec binds it. The policy that
    makes it ``blume.share``'s alternate exchange is the broker's (docs/operations.md).

    A short-lived connection of its own: declarations that fail close their channel, and
    the long-lived connection's channels are never caught in that.
    """
    planned = layout(specs, tiers)
    connection = await aio_pika.connect(url)
    async with connection:
        declarations = _Declarations(connection, warned)
        await declarations.shared_exchange()
        for name in planned.fanout_exchanges:
            await declarations.shared_exchange(name, aio_pika.ExchangeType.FANOUT)
        for name in planned.private_exchanges:
            await declarations.private_exchange(name)
        for name, arguments in planned.queues:
            await declarations.queue(name, arguments)
        for binding in planned.bindings:
            await declarations.bind(binding)


async def declare_shared_exchange(url: str) -> None:
    """Only ``blume.share``: what a publish-only process needs."""
    connection = await aio_pika.connect(url)
    async with connection:
        await _Declarations(connection, set()).shared_exchange()
