"""The producer verdict: may this event be acted on, given who published it?

Identity is the broker user that published a message, ``Delivery.producer``: the AMQP
``user_id``, which RabbitMQ checks against the publishing connection's user, so a publisher
cannot choose it; the transport keeps it across our own retries and operator replays.

The rule, for an event type and a producer:

- **Outside types** (marked ``outside`` in the contract registry: ``study.send.requested``,
  ``share.revoke.requested``) come from upstream clients and the CLI: accepted from any
  publisher the broker's permissions let publish them. The producer, when known, is the
  requester's identity (the audit record keeps it).
- **Every other type** is accepted only when the producer is the broker user of a service the
  registry names as one of its producers. No producer, a user that is no configured service's,
  or a type the registry does not know: refused.

``BLUME_BROKER_USERS`` names each service's user. Without it (single-user mode, as in the
quick start and the tests) every service is the user of ``BLUME_AMQP_URL``, or on the embedded
default ``EMBEDDED_BROKER_USER``: the rule still refuses a message with no producer or from
any other user, but cannot tell one of our services from another.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from blume_contracts.registry import EVENTS

from blume_runtime.broker_users import EMBEDDED_SERVICE_USER, BrokerUsers
from blume_runtime.settings import Settings

EMBEDDED_BROKER_USER: Final = EMBEDDED_SERVICE_USER
"""The one identity of the embedded default's in-memory broker (single-user mode)."""


class Refusal(StrEnum):
    """Why an event was not trusted (a log field; the dead-letter cause is
    ``untrusted_producer`` for all of them)."""

    NO_PRODUCER = "no_verified_producer"
    NOT_ITS_PRODUCER = "not_a_producer_of_this_type"
    UNKNOWN_TYPE = "type_not_in_registry"


@dataclass(frozen=True, slots=True)
class Verdict:
    refusal: Refusal | None
    requester: str | None = None
    """For an outside type: the verified publisher, recorded as the requester's identity."""

    @property
    def trusted(self) -> bool:
        return self.refusal is None


class ProducerRule:
    """The verdict for each event type, from the registry and the service users."""

    def __init__(self, users: BrokerUsers) -> None:
        self._outside = frozenset(name for name, spec in EVENTS.items() if spec.outside)
        self._producer_users = {
            name: frozenset(
                user for service in spec.producers if (user := users.user_of(service)) is not None
            )
            for name, spec in EVENTS.items()
            if not spec.outside
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> ProducerRule:
        return cls(settings.broker_user_map)

    def verdict(self, event_type: str, producer: str | None) -> Verdict:
        if event_type in self._outside:
            return Verdict(None, requester=producer)
        allowed = self._producer_users.get(event_type)
        if allowed is None:
            return Verdict(Refusal.UNKNOWN_TYPE)
        if producer is None:
            return Verdict(Refusal.NO_PRODUCER)
        if producer not in allowed:
            return Verdict(Refusal.NOT_ITS_PRODUCER)
        return Verdict(None)
