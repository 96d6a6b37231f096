"""Which broker user each service publishes as, and which services a broker user stands for.

``BLUME_BROKER_USERS`` (``service=user,service=user,...``) names the broker user of every
service in the contract registry and of ``ops`` (the dead-letter replay and purge tool).
Unset means single-user mode: every service and ``ops`` are the user of ``BLUME_AMQP_URL``.
RabbitMQ checks the AMQP ``user_id`` of every publish against the connection's user, so a
``user_id`` tells who published; this map tells which service that is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote, urlsplit

from blume_contracts.registry import EVENTS, OPS, UPSTREAM

EMBEDDED_SERVICE_USER: Final = "blume-share"
"""The in-memory broker's identity for the runtime's own services."""
DEFAULT_AMQP_USER: Final = "guest"
"""What aio-pika logs in as when the URL names no user."""


def service_names() -> frozenset[str]:
    """Every producer and consumer the registry names, except upstream clients, plus ``ops``."""
    named = {name for spec in EVENTS.values() for name in (*spec.producers, *spec.consumers)}
    return frozenset(named - {UPSTREAM}) | {OPS}


class BrokerUsersError(ValueError):
    """``BLUME_BROKER_USERS`` cannot be read, or leaves a service without a user."""


def parse_broker_users(text: str, known: Iterable[str] | None = None) -> dict[str, str]:
    """``service=user,...`` into a map; every known name must be given exactly once."""
    names = frozenset(known) if known is not None else service_names()
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        service, separator, user = (piece.strip() for piece in item.partition("="))
        if not separator or not service or not user:
            raise BrokerUsersError(f"expected service=user, got {item!r}")
        if service not in names:
            known_names = ", ".join(sorted(names))
            raise BrokerUsersError(f"unknown service {service!r}; known: {known_names}")
        if service in mapping:
            raise BrokerUsersError(f"{service} is given twice")
        mapping[service] = user
    if missing := sorted(names - mapping.keys()):
        raise BrokerUsersError(f"no broker user for {', '.join(missing)}")
    return mapping


def amqp_user(url: str) -> str:
    """The user name a connection to ``url`` authenticates as."""
    return unquote(urlsplit(url).username or "") or DEFAULT_AMQP_USER


@dataclass(frozen=True, slots=True)
class BrokerUsers:
    """The resolver both halves of the runtime use: service to user and user to services."""

    connection_user: str
    """The user this process connects as (and so publishes as)."""
    by_service: Mapping[str, str] = field(default_factory=dict)
    """Empty in single-user mode."""

    @property
    def single_user(self) -> bool:
        return not self.by_service

    def user_of(self, service: str) -> str | None:
        """The broker user ``service`` (or ``ops``) publishes as; None if the map names none."""
        if self.single_user:
            return self.connection_user
        return self.by_service.get(service)

    def trusted_for(self, service: str) -> frozenset[str]:
        """Users whose ``x-blume-*`` headers ``service`` believes: its own and the ops user's.

        Only they can write to the service's delay queues and dead-letter queue, so only
        they can have put a retried or replayed message back on its queue.
        """
        return frozenset(user for user in (self.user_of(service), self.user_of(OPS)) if user)

    def misassigned(self, names: Iterable[str]) -> list[str]:
        """The given services whose broker user is not this process's connection user."""
        return [name for name in names if self.user_of(name) != self.connection_user]
