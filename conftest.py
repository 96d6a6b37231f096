"""Shared fixtures: isolated real services for integration tests.

Each test that needs them gets its own PostgreSQL database and its own RabbitMQ vhost,
created here and removed afterwards, and a real SMTP server (aiosmtpd) on a free port.
Where a Docker engine exists and no service is named in the environment, testcontainers
starts PostgreSQL and RabbitMQ; otherwise the services named by ``BLUME_TEST_POSTGRES_URL``
and ``BLUME_TEST_AMQP_URL`` (default: the ones on localhost) are used.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from aiosmtpd.controller import Controller

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A PostgreSQL server URL with the right to create databases."""
    if url := os.environ.get("BLUME_TEST_POSTGRES_URL"):
        yield url
    elif _docker_available():
        from testcontainers.postgres import PostgresContainer  # type: ignore[import-untyped]

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
    else:
        yield LOCAL_POSTGRES


@pytest.fixture(scope="session")
def amqp_admin_url() -> Iterator[str]:
    """A RabbitMQ URL whose user may use any vhost we create."""
    if url := os.environ.get("BLUME_TEST_AMQP_URL"):
        yield url
    elif _docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer  # type: ignore[import-untyped]

        with RabbitMqContainer("rabbitmq:3.13-management-alpine") as container:
            params = container.get_connection_params()
            yield f"amqp://guest:guest@{params.host}:{params.port}/"
    else:
        yield LOCAL_AMQP


@contextmanager
def fresh_database(postgres_admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped on the way out."""
    name = f"blume_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(postgres_admin_url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    with fresh_database(postgres_admin_url) as url:
        yield url


@pytest.fixture
def migrated_database_url(database_url: str) -> str:
    """A fresh PostgreSQL database with the full schema applied."""
    from blume_share.schema import upgrade

    upgrade(database_url)
    return database_url


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def _management_api(admin_url: str, method: str, path: str, body: dict[str, Any] | None) -> None:
    import httpx

    api = os.environ["BLUME_TEST_RABBITMQ_API"]
    parts = urlsplit(admin_url)
    response = httpx.request(
        method, f"{api}{path}", json=body, auth=(parts.username or "", parts.password or "")
    )
    response.raise_for_status()


@pytest.fixture
def amqp_url(amqp_admin_url: str) -> Iterator[str]:
    """A fresh RabbitMQ vhost for this test, deleted afterwards (queues and all), with the
    alternate-exchange policy a deployment's broker definitions set on ``blume.share``."""
    from blume_runtime.topology import (
        UNROUTED_POLICY,
        UNROUTED_POLICY_NAME,
        UNROUTED_POLICY_PATTERN,
    )

    vhost = f"blume-test-{uuid.uuid4().hex[:12]}"
    user = urlsplit(amqp_admin_url).username or "guest"
    policy = {"pattern": UNROUTED_POLICY_PATTERN, "definition": UNROUTED_POLICY}
    if os.environ.get("BLUME_TEST_RABBITMQ_API"):
        _management_api(amqp_admin_url, "PUT", f"/api/vhosts/{vhost}", None)
        _management_api(
            amqp_admin_url,
            "PUT",
            f"/api/permissions/{vhost}/{user}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
        _management_api(
            amqp_admin_url,
            "PUT",
            f"/api/policies/{vhost}/{UNROUTED_POLICY_NAME}",
            {**policy, "apply-to": "exchanges"},
        )
    elif shutil.which("rabbitmqctl"):
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        _rabbitmqctl(
            "set_policy",
            "-p",
            vhost,
            "--apply-to",
            "exchanges",
            UNROUTED_POLICY_NAME,
            UNROUTED_POLICY_PATTERN,
            json.dumps(UNROUTED_POLICY),
        )
    else:
        pytest.fail(
            "cannot create a RabbitMQ vhost: set BLUME_TEST_RABBITMQ_API or install rabbitmqctl"
        )
    parts = urlsplit(amqp_admin_url)
    yield urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    if os.environ.get("BLUME_TEST_RABBITMQ_API"):
        _management_api(amqp_admin_url, "DELETE", f"/api/vhosts/{vhost}", None)
    else:
        _rabbitmqctl("delete_vhost", vhost)


@dataclass
class SmtpSink:
    """A real SMTP server (aiosmtpd) that keeps what it accepts."""

    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    reject_with: str | None = None
    """Set to an SMTP reply such as "550 5.1.1 mailbox unavailable" to refuse messages."""
    controller: Controller | None = None

    def stop(self) -> None:
        """An outage: the port refuses connections until ``start``."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def start(self) -> None:
        if self.controller is None:
            self.controller = Controller(self, hostname=self.host, port=self.port)
            self.controller.start()

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        if self.reject_with is not None:
            return self.reject_with
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 OK"

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[EmailMessage]:
        """Wait until at least ``count`` messages arrived; fail the test otherwise."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.messages) < count:
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"expected {count} emails, got {len(self.messages)}")
            await asyncio.sleep(0.05)
        return self.messages


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    with socket.socket() as probe:  # aiosmtpd cannot start on port 0: pick a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = SmtpSink(host="127.0.0.1", port=port)
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A state directory for the embedded default (SQLite file, mail drop, sealing key)."""
    return tmp_path / "state"


@pytest.fixture
async def sqlite_db(state_dir: Path) -> AsyncIterator[Any]:
    """A migrated SQLite database, as on the embedded default."""
    from blume_runtime.db import Database
    from blume_share.schema import upgrade

    state_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{state_dir / 'test.db'}"
    upgrade(url)
    db = Database(url, stages_audit=True)
    yield db
    await db.dispose()
