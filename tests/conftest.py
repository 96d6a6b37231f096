"""End-to-end harness: the real ``blume-share`` process against real services, observed from
outside with pika (an AMQP client independent of the one the product uses)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest
from cryptography.fernet import Fernet

from tests.pacs import Pacs, start_pacs

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = json.loads((REPO / "contracts/examples/study.send.requested.json").read_text())
PUBLIC_BASE_URL = "https://share.blume-test.example"


def blume_share(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blume_share", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def request_event(data: dict[str, Any] | None = None, **envelope: Any) -> dict[str, Any]:
    """A study.send.requested CloudEvent with a fresh id (override anything)."""
    event_id = str(uuid.uuid4())
    return {
        **EXAMPLE,
        "id": event_id,
        "correlationid": f"corr-{event_id}",
        "data": json.loads(json.dumps(data if data is not None else EXAMPLE["data"])),
        **envelope,
    }


def is_sender_notice(message: Any) -> bool:
    """An email telling the sender what became of a share (Message-ID ``<shr_….sender-…@…>``)."""
    return ".sender-" in str(message["Message-ID"])


def share_emails(messages: list[Any]) -> list[Any]:
    """The emails that carry a share to its recipient or patient: not the sender's notices."""
    return [message for message in messages if not is_sender_notice(message)]


@dataclass
class RunningSystem:
    """All four workers in a ``blume-share run`` process, plus an observer queue on ``#``."""

    env: dict[str, str]
    amqp_url: str
    database_url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    observed: list[dict[str, Any]] = field(default_factory=list)
    _connection: Any = None
    _channel: Any = None
    _observer_queue: str = ""

    def start(self) -> None:
        migrated = blume_share("migrate", env=self.env)
        assert migrated.returncode == 0, migrated.stderr
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "blume_share", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()
        deadline = time.monotonic() + 60
        while True:  # the exchange exists once the workers have declared their topology
            try:
                self._channel.exchange_declare("blume.share", passive=True)
                self._channel.queue_declare("blume.share.audit_sink", passive=True)
                break
            except pika.exceptions.ChannelClosedByBroker:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    pytest.fail(f"workers did not start:\n{self.logs()}")
                self._channel = self._connection.channel()
                self._channel.confirm_delivery()
                time.sleep(0.2)
        result = self._channel.queue_declare("", exclusive=True)
        self._observer_queue = result.method.queue
        self._channel.queue_bind(self._observer_queue, "blume.share", routing_key="#")
        self._wait_for_http(deadline)

    @property
    def http_base(self) -> str:
        """The access gateway ``blume-share run`` serves beside the workers."""
        return f"http://127.0.0.1:{self.env['BLUME_HTTP_PORT']}"

    def _wait_for_http(self, deadline: float) -> None:
        while True:
            try:
                with urllib.request.urlopen(f"{self.http_base}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or (self.process and self.process.poll() is not None):
                pytest.fail(f"the access gateway did not start:\n{self.logs()}")
            time.sleep(0.1)

    def publish(
        self, event: dict[str, Any] | bytes, routing_key: str = "study.send.requested"
    ) -> None:
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        message_id = None if isinstance(event, bytes) else event["id"]
        self._channel.basic_publish(
            "blume.share",
            routing_key,
            body,
            pika.BasicProperties(
                content_type="application/cloudevents+json",
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=message_id,
            ),
            mandatory=True,
        )

    def _drain(self) -> None:
        while True:
            method, _props, body = self._channel.basic_get(self._observer_queue, auto_ack=True)
            if method is None:
                return
            try:
                self.observed.append(json.loads(body))
            except json.JSONDecodeError:  # the poison messages tests publish on purpose
                self.observed.append({"type": None, "raw": body})

    def events(self, event_type: str, **data: Any) -> list[dict[str, Any]]:
        self._drain()
        return [
            event
            for event in self.observed
            if event.get("type") == event_type
            and all(event["data"].get(key) == value for key, value in data.items())
        ]

    async def wait_for(
        self, event_type: str, count: int = 1, timeout: float = 60, **data: Any
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(found := self.events(event_type, **data)) < count:
            if time.monotonic() > deadline:
                tail = self.logs()[-4000:]
                pytest.fail(f"waited for {count} {event_type} {data}, saw {len(found)}:\n{tail}")
            await asyncio.sleep(0.1)
        return found

    def queue_depth(self, queue: str) -> int:
        return int(self._channel.queue_declare(queue, passive=True).method.message_count)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@pytest.fixture
def system_env(
    amqp_url: str, database_url: str, smtp_server: Any, tmp_path: Path
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLUME_")}
    env.update(
        BLUME_AMQP_URL=amqp_url,
        BLUME_DATABASE_URL=database_url,
        BLUME_SMTP_URL=smtp_server.url,
        BLUME_PUBLIC_BASE_URL=PUBLIC_BASE_URL,
        BLUME_TOKEN_SEALING_KEY=Fernet.generate_key().decode(),
        BLUME_RETRY_DELAY_SECONDS="1",
        BLUME_OUTBOX_POLL_SECONDS="0.5",
        BLUME_LOG_FORMAT="json",
        BLUME_STATE_DIR=str(tmp_path / "state"),
        BLUME_HTTP_PORT=str(free_port()),
        BLUME_OPS_PORT=str(free_port()),
        BLUME_GATEWAY_SECRET_KEY=secrets.token_urlsafe(48),
    )
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def system(
    system_env: dict[str, str], amqp_url: str, database_url: str, tmp_path: Path
) -> Iterator[RunningSystem]:
    running = RunningSystem(system_env, amqp_url, database_url, tmp_path / "workers.log")
    running.start()
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"workers exited with {code} on SIGTERM:\n{running.logs()[-4000:]}"


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    """A real PACS for the whole test run: Orthanc with DICOMweb on free ports and a storage
    directory of its own, holding the synthesised two-series study and pydicom's CT_small."""
    pacs = start_pacs(tmp_path_factory.mktemp("orthanc"))
    try:
        yield pacs
    finally:
        pacs.server.stop()
