"""Who connects to the suite's cluster as whom.

Where the runtime ships least-privilege broker definitions (``blume-share broker
definitions``: a user per service, ``ops`` and each upstream client, without passwords),
the suite imports them into a vhost of its own cluster, gives every user a fresh password,
runs each worker as its own user with ``BLUME_BROKER_USERS`` naming them all, publishes
requests as the upstream client, and runs ``dlq`` as ``ops``: production's arrangement,
which a shared node could not host because users are global to a node. Where the runtime
has no such command, everything runs as one user (single-user mode), as in the quick start.
The suite's own administrator always observes the bus and answers ``rabbitmqctl``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from blume_contracts.registry import EVENTS
from blume_share.services import RUNNABLE

from tests.faults.broker import RabbitCluster, RabbitNode
from tests.faults.processes import FaultSuiteError
from tests.faults.workers import run_cli

VHOST: Final = "blume"
STRANGER_USER: Final = "blume-chaos-stranger"
"""A broker user of no service that may publish on ``blume.share``: an intruder."""
UPSTREAM_CLIENT: Final = "omegaai"
OPS: Final = "ops"


@dataclass
class Accounts:
    cluster: RabbitCluster
    passwords: dict[str, str] = field(default_factory=dict)
    """user -> password, for the users the definitions name (empty: single-user mode)."""
    broker_users: str | None = None
    """``BLUME_BROKER_USERS`` for every process (None: single-user mode)."""

    @property
    def per_service(self) -> bool:
        return bool(self.passwords)

    def url(self, node: RabbitNode, user: str | None) -> str:
        """``user``'s URL on ``node`` where it has its own account, else the administrator's."""
        if user is not None and user in self.passwords:
            return self.cluster.amqp_url(node, user, self.passwords[user])
        return self.cluster.amqp_url(node)

    def service_user(self, service: str) -> str | None:
        return service if service in self.passwords else None

    def producer_of(self, event_type: str) -> str:
        """The user the registry's producer of ``event_type`` publishes as."""
        spec = EVENTS.get(event_type)
        producer = spec.producers[0] if spec and spec.producers else None
        return producer if producer in self.passwords else self.cluster.user

    def add_stranger(self, node: RabbitNode) -> str:
        """Create the intruder (write on ``blume.share`` only); its password."""
        password = secrets.token_hex(24)  # a leading '-' would read as an option
        self.cluster.ctl(node, "add_user", STRANGER_USER, password)
        self.cluster.ctl(
            node, "set_permissions", "-p", self.cluster.vhost, STRANGER_USER, "^$",
            "^blume\\.share$", "^$",
        )  # fmt: skip
        return password


def set_up_accounts(cluster: RabbitCluster, env: Mapping[str, str], workdir: Path) -> Accounts:
    """Per-service users where the runtime defines them, else single-user mode."""
    try:
        definitions = run_cli(env, "broker", "definitions", "--vhost", VHOST)
    except FaultSuiteError:
        return Accounts(cluster)  # this runtime has no per-service users yet
    node = cluster.nodes[0]
    path = workdir / "definitions.json"
    path.write_text(definitions)
    cluster.ctl(node, "import_definitions", str(path))
    cluster.vhost = VHOST
    _wait_for_bindings(cluster, node, json.loads(definitions).get("bindings", []))
    cluster.ctl(node, "set_permissions", "-p", VHOST, cluster.user, ".*", ".*", ".*")
    users = [str(user["name"]) for user in json.loads(definitions)["users"]]
    passwords = {user: secrets.token_hex(24) for user in users}
    for user, password in passwords.items():
        cluster.ctl(node, "change_password", user, password)
    services = [user for user in users if user in {*RUNNABLE, OPS}]
    return Accounts(
        cluster, passwords, broker_users=",".join(f"{name}={name}" for name in services)
    )


def _wait_for_bindings(
    cluster: RabbitCluster, node: RabbitNode, bindings: list[dict[str, str]], within: float = 60
) -> None:
    """Until every binding the definitions name exists: the workers must find the whole
    topology in place, as production's definitions leave it, before the first one publishes."""
    wanted = {(entry["source"], entry["destination"], entry["routing_key"]) for entry in bindings}
    deadline = time.monotonic() + within
    while True:
        listed = cluster.ctl(
            node, "list_bindings", "-q", "-p", VHOST, "source_name", "destination_name",
            "routing_key",
        )  # fmt: skip
        present = {tuple(line.split("\t")) for line in listed.splitlines()}
        missing = wanted - present
        if not missing:
            return
        if time.monotonic() > deadline:
            raise FaultSuiteError(f"{len(missing)} bindings of the definitions never appeared")
        time.sleep(0.5)
