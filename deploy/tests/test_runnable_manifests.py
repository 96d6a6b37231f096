"""The manifests run: each worker Deployment's command, arguments and non-secret
environment, read from the rendered production overlay, run here against this test's own
RabbitMQ vhost and PostgreSQL database, until the readiness probe declared in the manifest
(its path, on the port it names) answers 200.

What a cluster would supply is substituted, nothing else: Secret values (each worker's
broker user is created in the vhost with the permissions of the Messaging Topology
Operator resources, so the workers run with least privilege, as in the cluster), the
hosts, the files of mounted Secrets, ConfigMaps and volumes (written to a temporary
directory, the variables pointing there), and the ops port (a free one: the manifest's is
checked to be the one BLUME_OPS_PORT names). The migrations Job runs first, twice."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pytest
from blume_audit_sink.signing_keys import new_private_key_text
from blume_share.services import SERVICES
from cryptography.fernet import Fernet

from deploy.tests.manifests import config_map_data, of_kind, pod_spec, render, runs
from deploy.tests.processes import Started
from tests.conftest import free_port

pytestmark = [pytest.mark.integration]

GENERATED_FILES: Final = {
    ("blume-token-sealing-key", "key"): lambda: Fernet.generate_key().decode(),
    ("blume-audit-signing-key", "private-key"): new_private_key_text,
}
DROPPED: Final = {"OTEL_EXPORTER_OTLP_ENDPOINT"}
"""No OTLP collector here: unset, tracing exports nothing."""
BIN: Final = Path(sys.executable).parent


def _fields(exchange: dict[str, Any]) -> dict[str, Any]:
    """An Exchange resource as a definitions entry (the operator's own defaults aside)."""
    spec = exchange["spec"]
    return {"name": spec["name"], "type": spec["type"], "durable": spec["durable"], "arguments": {}}


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@dataclass
class Cluster:
    """What the cluster would give the pods, made here for one test."""

    amqp_url: str
    database_url: str
    smtp_url: str
    root: Path
    prefix: str = field(default_factory=lambda: f"blume-deploy-{uuid.uuid4().hex[:8]}-")
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def vhost(self) -> str:
        return unquote(urlsplit(self.amqp_url).path.lstrip("/"))

    def create_broker_users(self, manifests: tuple[dict[str, Any], ...]) -> None:
        """Each topology User with its Permission and TopicPermission, and the Policies, in
        our vhost: one `rabbitmqctl import_definitions` (each rabbitmqctl call costs a VM)."""
        for user in of_kind(manifests, "User"):
            self.passwords[user["metadata"]["name"]] = uuid.uuid4().hex
        definitions = {
            "users": [
                {"name": self.prefix + name, "password": password, "tags": []}
                for name, password in self.passwords.items()
            ],
            "permissions": [
                {
                    "user": self.prefix + item["spec"]["userReference"]["name"],
                    "vhost": self.vhost,
                    **item["spec"]["permissions"],
                }
                for item in of_kind(manifests, "Permission")
            ],
            "topic_permissions": [
                {
                    "user": self.prefix + item["spec"]["userReference"]["name"],
                    "vhost": self.vhost,
                    **item["spec"]["permissions"],
                }
                for item in of_kind(manifests, "TopicPermission")
            ],
            "policies": [
                {
                    "vhost": self.vhost,
                    "name": item["spec"]["name"],
                    "pattern": item["spec"]["pattern"],
                    "apply-to": item["spec"]["applyTo"],
                    "priority": item["spec"]["priority"],
                    "definition": item["spec"]["definition"],
                }
                for item in of_kind(manifests, "Policy")
            ],
            "exchanges": [
                {"vhost": self.vhost, "auto_delete": False, "internal": False, **_fields(item)}
                for item in of_kind(manifests, "Exchange")
            ],
            "queues": [
                {
                    "vhost": self.vhost,
                    "name": item["spec"]["name"],
                    "durable": item["spec"]["durable"],
                    "auto_delete": False,
                    "arguments": {
                        "x-queue-type": item["spec"]["type"],
                        **item["spec"]["arguments"],
                    },
                }
                for item in of_kind(manifests, "Queue")
            ],
            "bindings": [
                {
                    "vhost": self.vhost,
                    "source": item["spec"]["source"],
                    "destination": item["spec"]["destination"],
                    "destination_type": item["spec"]["destinationType"],
                    "routing_key": item["spec"]["routingKey"],
                    "arguments": {},
                }
                for item in of_kind(manifests, "Binding")
            ],
        }
        # rabbitmqctl hands the file to the broker, which reads it as its own user.
        shared = Path(tempfile.mkdtemp(prefix="blume-deploy-"))
        try:
            shared.chmod(0o755)
            path = shared / "definitions.json"
            path.write_text(json.dumps(definitions))
            path.chmod(0o644)
            rabbitmqctl("import_definitions", str(path))
            self._wait_for_users()
        finally:
            shutil.rmtree(shared)

    def _wait_for_users(self) -> None:
        """The import is asynchronous: wait until every user exists."""
        wanted = {self.prefix + name for name in self.passwords}
        deadline = time.monotonic() + 30
        while True:
            listed = subprocess.run(
                ["rabbitmqctl", "-q", "list_users"], capture_output=True, text=True, check=True
            ).stdout
            if wanted <= {line.split("\t")[0] for line in listed.splitlines()}:
                return
            assert time.monotonic() < deadline, "the broker users were not created"
            time.sleep(0.5)

    def delete_broker_users(self) -> None:
        deleting = [
            subprocess.Popen(
                ["rabbitmqctl", "delete_user", self.prefix + name], stdout=subprocess.DEVNULL
            )
            for name in self.passwords
        ]
        for process in deleting:
            process.wait(timeout=60)

    def broker_url(self, user: str) -> str:
        parts = urlsplit(self.amqp_url)
        login = quote(self.prefix + user)
        netloc = f"{login}:{self.passwords[user]}@{parts.hostname}:{parts.port or 5672}"
        return urlunsplit(parts._replace(netloc=netloc))

    def secret(self, name: str, key: str) -> str:
        if name.startswith("blume-amqp-") and key == "url":
            return self.broker_url(name.removeprefix("blume-amqp-"))
        if name.startswith("blume-db-") and key in {"url", "uri"}:
            return self.database_url
        if name == "blume-smtp" and key == "url":
            return self.smtp_url
        raise LookupError(f"no stand-in for Secret {name} key {key}")


def environment(
    workload: dict[str, Any], manifests: tuple[dict[str, Any], ...], cluster: Cluster, where: Path
) -> dict[str, str]:
    """The container's environment with the cluster's parts substituted (module docstring)."""
    pod = pod_spec(workload)
    assert pod is not None
    [container] = pod["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_map_data(manifests, source["configMapRef"]["name"].rsplit("-", 1)[0]))
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = cluster.secret(ref["name"], ref["key"])
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        local = where / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        if "secret" in volume:
            for (secret, key), generate in GENERATED_FILES.items():
                if secret == volume["secret"]["secretName"]:
                    (local / key).write_text(generate())
        if "configMap" in volume:
            data = config_map_data(manifests, volume["configMap"]["name"].rsplit("-", 1)[0])
            for key, value in data.items():
                (local / key).write_text(value)
        for name, value in env.items():
            if value == mount["mountPath"] or value.startswith(mount["mountPath"] + "/"):
                env[name] = str(local) + value.removeprefix(mount["mountPath"])
    # Set after the mount paths are mapped: a checkout under /tmp must not be taken for the
    # container's /tmp emptyDir.
    env.update(PATH=f"{BIN}:/usr/bin:/bin", HOME=str(where))
    if "BLUME_BROKER_USERS" in env:  # the users' names, prefixed as created above
        users = dict(item.split("=", 1) for item in env["BLUME_BROKER_USERS"].split(","))
        env["BLUME_BROKER_USERS"] = ",".join(
            f"{service}={cluster.prefix}{user.replace('_', '-')}" for service, user in users.items()
        )
    for name in DROPPED:
        env.pop(name, None)
    return env


def readiness(workload: dict[str, Any], env: dict[str, str]) -> tuple[str, int]:
    """The readiness probe's path and port as declared; the port must be BLUME_OPS_PORT."""
    pod = pod_spec(workload)
    assert pod is not None
    [container] = pod["containers"]
    probe = container["readinessProbe"]["httpGet"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    port = ports.get(probe["port"], probe["port"])
    assert port == int(env["BLUME_OPS_PORT"])
    return probe["path"], port


@pytest.fixture
def cluster(
    amqp_url: str, database_url: str, smtp_server: Any, tmp_path: Path
) -> Iterator[Cluster]:
    made = Cluster(amqp_url, database_url, smtp_server.url, tmp_path)
    made.create_broker_users(render("production"))
    try:
        yield made
    finally:
        made.delete_broker_users()


def test_every_worker_deployment_runs_and_becomes_ready(cluster: Cluster, tmp_path: Path) -> None:
    """Migrations Job twice (exit 0 both times), then each worker as its Deployment says,
    with its own broker user, until its declared readiness probe answers 200."""
    manifests = render("production")
    [migrations] = of_kind(manifests, "Job")
    migrate_env = environment(migrations, manifests, cluster, tmp_path / "migrate")
    for attempt in (1, 2):
        result = subprocess.run(
            runs(migrations), env=migrate_env, cwd=tmp_path, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"migration run {attempt}: {result.stderr}"
    workers = [
        item for item in of_kind(manifests, "Deployment") if runs(item)[1:2] == ["run"]
        and runs(item)[2] in SERVICES
    ]  # fmt: skip
    assert len(workers) == len(SERVICES)
    started: list[tuple[Started, str]] = []
    try:
        for workload in workers:
            name = workload["metadata"]["name"]
            env = environment(workload, manifests, cluster, tmp_path / name)
            path, _declared = readiness(workload, env)
            env["BLUME_OPS_PORT"] = str(free_port())
            process = Started(name, runs(workload), env, tmp_path, tmp_path / f"{name}.log")
            started.append((process.start(), f"http://127.0.0.1:{env['BLUME_OPS_PORT']}{path}"))
        for process, url in started:
            process.wait_until(url, timeout=60)
    finally:
        codes = {process.name: process.stop() for process, _url in started}
    assert set(codes.values()) == {0}, codes
