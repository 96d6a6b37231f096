"""The broker's users, permissions and policies as Messaging Topology Operator resources.

``python -m deploy.tools.broker_topology`` writes ``deploy/k8s/base/engines/
rabbitmq-topology.yaml`` from the contract registry (who produces and consumes each event
type) and the worker list, so the permissions cannot drift from the contracts:

- one broker user per worker, for the gateway, for ``ops`` (the CLI: revoke, dlq) and per
  upstream client, each backed by a Secret ``blume-amqp-<user>`` (keys ``username``,
  ``password`` and ``url``); plus ``keda``, a monitoring-only user for queue lengths;
- configure, write and read only on the user's own queues ``blume.share.<service>(\\..*)?``
  and the exchange (the runtime declares it idempotently and binds to it; retries go to the
  service's own retry queue through the default exchange);
- topic write only for the event types the registry names the user as producer of, topic
  read only for the types it consumes (the audit sink binds ``#``);
- quorum-queue policies: at-least-once dead-lettering with ``reject-publish`` overflow
  (issue 8) and leaders balanced over the nodes;
- an exchanges-only policy making ``blume.share.unrouted`` (fanout) the alternate exchange of
  ``blume.share``, as in ``blume-share broker definitions``; the audit sink may configure
  and read that exchange (to declare it and bind its queue);
- every worker's queues, private exchange and bindings, exactly as the worker declares them
  (``blume_runtime.topology.layout``, delay tiers of ``BLUME_RETRY_MAX_DELAY_SECONDS``'s
  default), so that they exist before the first worker starts: an event published before its
  consumer first ran would otherwise reach no queue of that consumer's.

Once ``deploy/rabbitmq/definitions.json`` (the broker definitions the faults work ships)
is on main, it is the source these resources should be generated from instead.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import yaml
from blume_contracts.registry import EVENTS, UPSTREAM
from blume_runtime.broker_definitions import DEFAULT_TIERS, UNROUTED_CONSUMERS, queue_specs
from blume_runtime.topology import (
    QUEUE_PREFIX,
    UNROUTED_EXCHANGE,
    UNROUTED_POLICY,
    UNROUTED_POLICY_NAME,
    UNROUTED_POLICY_PATTERN,
    layout,
)
from blume_share.services import GATEWAY, SERVICES

CLUSTER: Final = "blume-rabbitmq"
VHOST: Final = "blume"
EXCHANGE: Final = "blume.share"
OPS: Final = "ops"
KEDA: Final = "keda"
CLI_PRODUCER: Final = "cli"
"""The registry's name for events the command line publishes; it runs as the ops user."""
ALL_EVENTS_BINDING: Final = "audit_sink"
TARGET: Final = Path(__file__).resolve().parents[1] / "k8s/base/engines/rabbitmq-topology.yaml"


def resource_name(user: str) -> str:
    return user.replace("_", "-")


def secret_name(user: str) -> str:
    return f"blume-amqp-{resource_name(user)}"


def _alternatives(patterns: Iterable[str]) -> str:
    listed = sorted(set(patterns))
    return f"^({'|'.join(listed)})$" if listed else "^$"


def _event_types(principal: str, role: str) -> list[str]:
    return [
        re.escape(spec.event_type) for spec in EVENTS.values() if principal in getattr(spec, role)
    ]


def own_queues(service: str) -> str:
    return re.escape(f"{QUEUE_PREFIX}{service}") + r"(\..*)?"


def permissions(user: str) -> dict[str, str]:
    exchange = re.escape(EXCHANGE)
    if user in SERVICES or user == GATEWAY:
        own = own_queues(user)
        unrouted = [re.escape(UNROUTED_EXCHANGE)] if user in UNROUTED_CONSUMERS else []
        return {
            "configure": _alternatives([exchange, own, *unrouted]),
            "write": _alternatives([r"amq\.default", exchange, own]),
            "read": _alternatives([exchange, own, *unrouted]),
        }
    if user == OPS:
        dead_letters = re.escape(QUEUE_PREFIX) + r"[a-z_]+\.dlq"
        return {
            "configure": "^$",
            "write": _alternatives([r"amq\.default", exchange]),
            "read": f"^{dead_letters}$",
        }
    if user == KEDA:
        return {"configure": "^$", "write": "^$", "read": "^$"}
    own = re.escape(user) + r"(\..*)?"
    return {
        "configure": f"^{own}$",
        "write": _alternatives([exchange, own]),
        "read": _alternatives([exchange, own]),
    }


def topic_permissions(user: str) -> dict[str, str]:
    producer = CLI_PRODUCER if user == OPS else user
    read = ".*" if user == ALL_EVENTS_BINDING else _alternatives(_event_types(user, "consumers"))
    return {
        "exchange": EXCHANGE,
        "write": _alternatives(_event_types(producer, "producers")),
        "read": read,
    }


def broker_users() -> list[str]:
    return [*SERVICES, GATEWAY, OPS, UPSTREAM, KEDA]


def _cluster() -> dict[str, str]:
    return {"name": CLUSTER}


def resources() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [
        _resource("Vhost", VHOST, {"name": VHOST, "defaultQueueType": "quorum"}),
        _resource(
            "Policy",
            "blume-quorum-queues",
            {
                "name": "blume-quorum-queues",
                "vhost": VHOST,
                "pattern": "^" + re.escape(QUEUE_PREFIX) + ".+$",
                "applyTo": "queues",
                "priority": 0,
                "definition": {
                    "dead-letter-strategy": "at-least-once",
                    "overflow": "reject-publish",
                    "queue-leader-locator": "balanced",
                },
            },
        ),
        _resource(
            "Policy",
            UNROUTED_POLICY_NAME,
            {
                "name": UNROUTED_POLICY_NAME,
                "vhost": VHOST,
                "pattern": UNROUTED_POLICY_PATTERN,
                "applyTo": "exchanges",
                "priority": 0,
                "definition": dict(UNROUTED_POLICY),
            },
        ),
    ]
    for user in broker_users():
        name = resource_name(user)
        found.append(
            _resource(
                "User",
                name,
                {
                    "tags": ["monitoring"] if user == KEDA else [],
                    "importCredentialsSecret": {"name": secret_name(user)},
                },
            )
        )
        reference = {"vhost": VHOST, "userReference": {"name": name}}
        found.append(_resource("Permission", name, {**reference, "permissions": permissions(user)}))
        if user != KEDA:
            found.append(
                _resource(
                    "TopicPermission",
                    name,
                    {**reference, "permissions": topic_permissions(user)},
                )
            )
    return found + queue_resources()


def queue_resources() -> list[dict[str, Any]]:
    """Exchange, Queue and Binding resources for every consumer's own topology (the workers'
    and the gateway's projection queue), as in ``blume-share broker definitions``."""
    planned = layout(queue_specs(), DEFAULT_TIERS)
    kinds = {
        **dict.fromkeys(planned.fanout_exchanges, "fanout"),
        **dict.fromkeys(planned.private_exchanges, "direct"),
    }
    found = [
        _resource(
            "Exchange",
            resource_name(name),
            {"name": name, "vhost": VHOST, "type": kind, "durable": True, "autoDelete": False},
        )
        for name, kind in kinds.items()
    ]
    for name, arguments in planned.queues:
        # The operator sets x-queue-type from ``type``; the rest are the worker's arguments.
        rest = {key: value for key, value in arguments.items() if key != "x-queue-type"}
        spec = {"name": name, "vhost": VHOST, "type": arguments["x-queue-type"], "durable": True}
        found.append(_resource("Queue", resource_name(name), {**spec, "arguments": rest}))
    for binding in planned.bindings:
        key = {"#": "all-events", "": "unrouted"}.get(binding.key, binding.key)
        found.append(
            _resource(
                "Binding",
                resource_name(f"{binding.queue}--{key}"),
                {
                    "vhost": VHOST,
                    "source": binding.exchange,
                    "destination": binding.queue,
                    "destinationType": "queue",
                    "routingKey": binding.key,
                },
            )
        )
    return found


def _resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "rabbitmq.com/v1beta1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {**spec, "rabbitmqClusterReference": _cluster()},
    }


HEADER: Final = (
    "# Generated by `python -m deploy.tools.broker_topology` from the contract registry;\n"
    "# do not edit (deploy/tests check that it is current). Messaging Topology Operator 1.17.\n"
)


def render() -> str:
    return HEADER + yaml.safe_dump_all(resources(), sort_keys=False, width=120)


def main() -> None:
    TARGET.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {TARGET}\n")


if __name__ == "__main__":
    main()
