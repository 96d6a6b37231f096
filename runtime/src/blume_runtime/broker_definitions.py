"""Least-privilege RabbitMQ definitions, generated from the contract registry.

One broker user per service (its name), one for the web gateway, one ``ops`` user for the
dead-letter tools and ``blume-share revoke``, and one per upstream client. No passwords:
each user's ``password_hash`` is empty, so nobody can log in as it until its password is set
from the secret store (``rabbitmqctl change_password``; see docs/operations.md).

- A service may configure, write (bind) and read only its own queues and private exchange,
  read ``blume.share`` (to bind), and write it if it produces anything. A service whose queue
  binds ``blume.share.unrouted`` (``UNROUTED_CONSUMERS``: the audit sink) may also configure
  (declare) and read (bind to) that exchange.
- Topic permissions on ``blume.share``: a user may publish only the routing keys the
  registry says it produces, and bind only the keys of the types it consumes.
- ``ops`` may read every DLQ and write every service's private exchange (replays, and
  keeping what a walk leaves in place), and publish its own event types.
- An upstream client may publish the upstream request types and bind queues of its own
  (named ``<client>.…``) to the outcomes it consumes.
- Nobody may write ``amq.default``: messages reach a queue only through ``blume.share`` or
  its service's private exchange.
- The policy gives service and delay queues declared by an earlier release at-least-once
  dead-lettering (the new release declares it as queue arguments).
- A second policy, on exchanges only (``^blume\\.share$``), makes ``blume.share.unrouted``
  (durable fanout) the alternate exchange of ``blume.share``: what no queue binds reaches the
  queues bound to it. A publisher needs no permission on the alternate exchange for that:
  RabbitMQ asks for write on it only from whoever declares an exchange with an
  ``alternate-exchange`` argument (https://www.rabbitmq.com/docs/ae), and with a policy
  nobody does; a user allowed only ``blume.share`` and the routing key gets its unroutable
  message to the audit sink's queue (runtime/tests/test_unrouted.py, on a real broker).
- Every service's queues, private exchange and bindings, exactly as its worker declares them
  (``topology.layout``), so that they exist before any worker starts: an event published
  before its consumer first ran (``patients import``'s accounts, relayed by the first
  blume_publisher to start) would otherwise have reached no queue of that consumer's, and
  been lost to it. The delay tiers follow ``BLUME_RETRY_MAX_DELAY_SECONDS`` as the workers'.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from blume_contracts.envelope import EXCHANGE
from blume_contracts.registry import EVENTS, OPS, UPSTREAM, consumed_by

from blume_runtime.settings import Settings
from blume_runtime.topology import (
    AT_LEAST_ONCE_POLICY,
    QUEUE_PREFIX,
    UNROUTED_EXCHANGE,
    UNROUTED_POLICY,
    UNROUTED_POLICY_NAME,
    UNROUTED_POLICY_PATTERN,
    QueueSpec,
    delay_tiers,
    layout,
)
from blume_runtime.unit_of_work import AUDITED_FROM_THE_EXCHANGE

DEFAULT_VHOST: Final = "blume"
DEFAULT_TIERS: Final = delay_tiers(Settings.model_fields["retry_max_delay_seconds"].default)
"""The delay tiers of ``BLUME_RETRY_MAX_DELAY_SECONDS``'s default."""
NOTHING: Final = "^$"
POLICY_NAME: Final = "blume-share-at-least-once"
_OWN_SUFFIXES: Final = r"(\.dlq|\.private|\.delay\.[0-9]+s)?"
UNROUTED_CONSUMERS: Final = frozenset({"audit_sink"})
"""The services whose queue also binds ``blume.share.unrouted`` (``QueueSpec.binds_unrouted``)."""


def _alternatives(names: Iterable[str]) -> str:
    escaped = sorted(re.escape(name) for name in names)
    return f"^({'|'.join(escaped)})$" if escaped else NOTHING


def produced_by(name: str) -> list[str]:
    return sorted(spec.event_type for spec in EVENTS.values() if name in spec.producers)


def queue_services() -> list[str]:
    """The registry's consumers that have a queue of their own (not upstream clients)."""
    return sorted({name for spec in EVENTS.values() for name in spec.consumers} - {UPSTREAM})


def publishing_services() -> list[str]:
    """Producers with no queue (the web gateway), besides upstream clients and ops."""
    producers = {name for spec in EVENTS.values() for name in spec.producers}
    return sorted(producers - set(queue_services()) - {UPSTREAM, OPS})


def binding_keys(service: str) -> list[str]:
    """What a service binds: its consumed types; the audit sink, which records every type,
    only those no service of ours stages in its own transaction (the rest reach it only
    when nothing else routes them: ``blume.share.unrouted``)."""
    if service in UNROUTED_CONSUMERS:
        return list(AUDITED_FROM_THE_EXCHANGE)
    return consumed_by(service)


def may_bind(service: str) -> list[str]:
    """What a service's user may bind: its binding keys, and ``#`` for the audit sink, which
    binds every type where some service's database is not its own
    (``Settings.audit_copies_needed``)."""
    return [*binding_keys(service), *(["#"] if service in UNROUTED_CONSUMERS else [])]


def queue_specs() -> list[QueueSpec]:
    """Every queue service's spec as its worker declares it: bound by ``binding_keys``, and
    to ``blume.share.unrouted`` when it is one of ``UNROUTED_CONSUMERS``."""
    return [
        QueueSpec(name, tuple(binding_keys(name)), binds_unrouted=name in UNROUTED_CONSUMERS)
        for name in queue_services()
    ]


def _own(service: str) -> str:
    return re.escape(f"{QUEUE_PREFIX}{service}") + _OWN_SUFFIXES


def _user(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "password_hash": "",
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": [],
    }


def definitions(
    vhost: str = DEFAULT_VHOST, *, user_suffix: str = "", tiers: Sequence[int] = DEFAULT_TIERS
) -> dict[str, Any]:
    """The definitions document ``rabbitmqctl import_definitions`` takes."""
    shared = re.escape(EXCHANGE)
    services = queue_services()
    users: list[dict[str, Any]] = []
    permissions: list[dict[str, Any]] = []
    topics: list[dict[str, Any]] = []

    def grant(name: str, configure: str, write: str, read: str, send: str, bind: str) -> None:
        user = f"{name}{user_suffix}"
        users.append(_user(user))
        permissions.append(
            {"user": user, "vhost": vhost, "configure": configure, "write": write, "read": read}
        )
        topics.append(
            {"user": user, "vhost": vhost, "exchange": EXCHANGE, "write": send, "read": bind}
        )

    unrouted = re.escape(UNROUTED_EXCHANGE)
    for service in services:
        own = _own(service)
        sends = produced_by(service)
        # Declaring and binding the unrouted exchange; nobody writes it but the broker.
        declares = f"({own}|{unrouted})" if service in UNROUTED_CONSUMERS else own
        grant(
            service,
            configure=f"^{declares}$",
            write=f"^({shared}|{own})$" if sends else f"^{own}$",
            read=f"^({shared}|{declares})$",
            send=_alternatives(sends),
            bind=_alternatives(may_bind(service)),
        )
    for publisher in publishing_services():
        grant(
            publisher,
            NOTHING,
            f"^{shared}$",
            NOTHING,
            _alternatives(produced_by(publisher)),
            NOTHING,
        )
    every = "(" + "|".join(re.escape(service) for service in services) + ")"
    prefix = re.escape(QUEUE_PREFIX)
    grant(
        OPS,
        configure=NOTHING,
        write=f"^({shared}|{prefix}{every}\\.private)$",
        read=f"^{prefix}{every}\\.dlq$",
        send=_alternatives(produced_by(OPS)),
        bind=NOTHING,
    )
    client_queues = re.escape(f"{UPSTREAM}.") + ".+"
    grant(
        UPSTREAM,
        configure=f"^{client_queues}$",
        write=f"^({shared}|{client_queues})$",
        read=f"^({shared}|{client_queues})$",
        send=_alternatives(produced_by(UPSTREAM)),
        bind=_alternatives(consumed_by(UPSTREAM)),
    )
    planned = layout(queue_specs(), tiers)
    return {
        "vhosts": [{"name": vhost}],
        "users": users,
        "permissions": permissions,
        "topic_permissions": topics,
        "exchanges": [
            _exchange(EXCHANGE, vhost, "topic"),
            *(_exchange(name, vhost, "fanout") for name in planned.fanout_exchanges),
            *(_exchange(name, vhost, "direct") for name in planned.private_exchanges),
        ],
        "queues": [
            {
                "name": name,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": arguments,
            }
            for name, arguments in planned.queues
        ],
        "bindings": [
            {
                "source": binding.exchange,
                "vhost": vhost,
                "destination": binding.queue,
                "destination_type": "queue",
                "routing_key": binding.key,
                "arguments": {},
            }
            for binding in planned.bindings
        ],
        "policies": [
            {
                "vhost": vhost,
                "name": POLICY_NAME,
                "pattern": f"^{prefix}{every}(\\.delay\\.[0-9]+s)?$",
                "apply-to": "queues",
                "priority": 0,
                "definition": dict(AT_LEAST_ONCE_POLICY),
            },
            {
                "vhost": vhost,
                "name": UNROUTED_POLICY_NAME,
                "pattern": UNROUTED_POLICY_PATTERN,
                "apply-to": "exchanges",
                "priority": 0,
                "definition": dict(UNROUTED_POLICY),
            },
        ],
    }


def _exchange(name: str, vhost: str, kind: str) -> dict[str, Any]:
    return {
        "name": name,
        "vhost": vhost,
        "type": kind,
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
    }
