"""A worker process's ops port when the broker takes its consumer away, on real RabbitMQ.

``blume-share run link_issuer`` runs as its own process; the test deletes its queue, closes
its connection from the broker and takes away its rights on the vhost, and watches
``/readyz`` and ``/healthz`` from outside.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import blume_share

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

QUEUE = "blume.share.link_issuer"


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def probe(port: str, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())
    except OSError:
        return 0, {}


def eventually(check: Callable[[], bool], within: float, what: str) -> float:
    """Poll until ``check`` holds; return how long it took (fail after ``within``)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            pytest.fail(f"{what}: not within {within} s")
        time.sleep(0.1)
    return time.monotonic() - started


def close_our_connections(vhost: str) -> int:
    """``rabbitmqctl close_connection`` for every connection of the worker to the vhost."""
    listed = rabbitmqctl("list_connections", "pid", "vhost", "client_properties")
    pids = [
        line.split("\t")[0]
        for line in listed.splitlines()[1:]
        if f"\t{vhost}\t" in line and "blume-share link_issuer" in line
    ]
    for pid in pids:
        rabbitmqctl("close_connection", pid, "test: the broker drops the worker")
    return len(pids)


@pytest.fixture
def worker(
    system_env: dict[str, str], amqp_url: str, tmp_path: Path
) -> Iterator[tuple[dict[str, str], str, Path]]:
    """``blume-share run link_issuer``, ready; yields its env, its vhost and its log."""
    env = {
        **system_env,
        "BLUME_CONSUMER_WATCHDOG_SECONDS": "3",
        "BLUME_CONSUMER_GRACE_SECONDS": "4",
    }
    assert blume_share("migrate", env=env).returncode == 0
    log = tmp_path / "link_issuer.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "blume_share", "run", "link_issuer"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        port = env["BLUME_OPS_PORT"]
        eventually(lambda: probe(port, "/readyz")[0] == 200, 60, "ready after start")
        yield env, unquote(urlsplit(amqp_url).path.lstrip("/")), log
    finally:
        process.terminate()
        assert process.wait(timeout=45) == 0, log.read_text()


def test_readyz_sees_a_deleted_queue_and_a_dropped_connection_and_the_recovery(
    worker: tuple[dict[str, str], str, Path],
) -> None:
    """Not ready within 10 s of losing the consumer (queue deleted, then connection closed
    by the broker), naming the queue; ready again once the watchdog re-attached it."""
    env, vhost, log = worker
    port = env["BLUME_OPS_PORT"]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    assert f'blume_consumers_attached{{queue="{QUEUE}",service="link_issuer"}} 1.0' in (
        metrics.decode()
    )

    rabbitmqctl("delete_queue", "-p", vhost, QUEUE)
    noticed = eventually(lambda: probe(port, "/readyz")[0] == 503, 10, "not ready after deletion")
    status, body = probe(port, "/readyz")
    if status == 503:  # the watchdog may already have healed it
        assert body["failing"] == ["consumers"]
        assert QUEUE in str(body["checks"])
    healed = eventually(lambda: probe(port, "/readyz")[0] == 200, 20, "ready after redeclaring")
    print(f"queue deleted: not ready after {noticed:.1f} s, ready again {healed:.1f} s later")
    assert QUEUE in rabbitmqctl("list_queues", "-p", vhost, "name").split()

    assert close_our_connections(vhost) >= 1
    noticed = eventually(lambda: probe(port, "/readyz")[0] == 503, 10, "not ready after close")
    healed = eventually(lambda: probe(port, "/readyz")[0] == 200, 30, "ready after reconnecting")
    print(f"connection closed: not ready after {noticed:.1f} s, ready again {healed:.1f} s later")
    assert "consumer re-attached" in log.read_text()


def test_healthz_fails_once_the_consumer_is_gone_longer_than_the_grace(
    worker: tuple[dict[str, str], str, Path],
) -> None:
    """A worker that cannot get its consumer back (its user lost its rights on the vhost)
    stays alive for the grace period (4 s here), then /healthz is 503 so that the
    orchestrator restarts it; when the rights come back it heals by itself."""
    env, vhost, _log = worker
    port = env["BLUME_OPS_PORT"]
    rabbitmqctl("clear_permissions", "-p", vhost, "guest")
    try:
        assert close_our_connections(vhost) >= 1
        eventually(lambda: probe(port, "/readyz")[0] == 503, 10, "not ready")
        assert probe(port, "/healthz")[0] == 200, "alive during the grace period"
        waited = eventually(lambda: probe(port, "/healthz")[0] == 503, 20, "unhealthy")
        print(f"no consumer: /healthz 503 {waited:.1f} s after /readyz went 503 (grace 4 s)")
        status, body = probe(port, "/healthz")
        assert status == 503
        assert "grace 4 s" in str(body["checks"])
        assert waited >= 2
    finally:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    eventually(lambda: probe(port, "/healthz")[0] == 200, 30, "healthy again")
    eventually(lambda: probe(port, "/readyz")[0] == 200, 30, "ready again")


def test_a_busy_ops_port_is_a_clear_start_up_error(system_env: dict[str, str]) -> None:
    """Exit 3 with a message naming BLUME_OPS_PORT, before consuming anything."""
    assert blume_share("migrate", env=system_env).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**system_env, "BLUME_OPS_PORT": str(taken.getsockname()[1])}
        started = blume_share("run", "link_issuer", env=env, timeout=60)
    assert started.returncode == 3, started.stderr
    assert "BLUME_OPS_PORT" in started.stderr
