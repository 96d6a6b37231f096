"""``blume-share run access_gateway``: the web gateway alone, on RabbitMQ and PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pika
import pytest

from tests.conftest import blume_share

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_the_gateway_runs_alone_and_publishes_its_events(
    system_env: dict[str, str], amqp_url: str, tmp_path: Path
) -> None:
    """Alone it serves HTTP, publishes a denial to the exchange, and exits 0 on SIGTERM."""
    assert blume_share("migrate", env=system_env).returncode == 0
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare("blume.share", exchange_type="topic", durable=True)
    observer = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(observer, "blume.share", routing_key="share.link.#")
    base = f"http://127.0.0.1:{system_env['BLUME_HTTP_PORT']}"
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "blume_share", "run", "access_gateway"],
        env=system_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                    break
            except OSError:
                assert process.poll() is None, (tmp_path / "gateway.log").read_text()
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.1)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/s/{'n' * 43}", timeout=5)
        assert refused.value.code == 404
        deadline = time.monotonic() + 30
        while (message := channel.basic_get(observer, auto_ack=True))[0] is None:
            assert time.monotonic() < deadline, "no share.link.denied on the exchange"
            time.sleep(0.1)
        event = json.loads(message[2])
        assert event["type"] == "share.link.denied"
        assert event["data"]["reason"] == "unknown"
    finally:
        connection.close()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        log.close()
    assert code == 0, (tmp_path / "gateway.log").read_text()
