"""The small parts: client addresses behind proxies, the gateway secret, code hashing, the
uvicorn server on the runtime's loop."""

from __future__ import annotations

import ipaddress
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from blume_access_gateway.clients import client_ip, normalised_user_agent
from blume_access_gateway.denial_tally import DenialTally
from blume_access_gateway.keys import GatewayKeyError, GatewayKeys
from blume_access_gateway.otp import code_hash, new_code, normalise_code
from blume_access_gateway.server import HttpServer, bind
from blume_access_gateway.settings import GatewaySettings
from blume_contracts.events import ClientContext
from blume_runtime.settings import Settings
from starlette.requests import Request

from services.access_gateway.tests.conftest import Harness

PROXY = ipaddress.ip_network("10.0.0.0/8")


def request_from(peer: str, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "client": (peer, 1234), "headers": headers})


def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    """A client cannot claim another address by sending X-Forwarded-For itself."""
    assert client_ip(request_from("203.0.113.7", "198.51.100.1"), [PROXY]) == "203.0.113.7"


def test_behind_a_trusted_proxy_the_nearest_untrusted_hop_is_the_client() -> None:
    """Read right to left, skipping trusted proxies; what the client prepended is ignored."""
    request = request_from("10.0.0.5", "6.6.6.6, 203.0.113.7, 10.0.0.9")
    assert client_ip(request, [PROXY]) == "203.0.113.7"


def test_a_malformed_hop_stops_the_walk() -> None:
    """Garbage in the header: fall back to the proxy's own address."""
    assert client_ip(request_from("10.0.0.5", "not-an-address"), [PROXY]) == "10.0.0.5"


def test_trusted_proxies_setting_reads_a_comma_separated_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BLUME_TRUSTED_PROXIES=10.0.0.0/8, 192.0.2.1 is two networks."""
    monkeypatch.setenv("BLUME_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1")
    assert [str(n) for n in GatewaySettings().trusted_proxies] == ["10.0.0.0/8", "192.0.2.1/32"]


def test_embedded_default_generates_a_private_gateway_secret(tmp_path: Path) -> None:
    """No secret configured on the embedded default: one is generated, mode 0600, and kept."""
    settings = Settings(_env_file=None, state_dir=tmp_path)  # type: ignore[call-arg]
    first = GatewayKeys.from_settings(settings, GatewaySettings(_env_file=None))  # type: ignore[call-arg]
    again = GatewayKeys.from_settings(settings, GatewaySettings(_env_file=None))  # type: ignore[call-arg]
    assert first == again
    assert os.stat(tmp_path / "gateway.key").st_mode & 0o777 == 0o600


def test_production_needs_a_configured_secret(tmp_path: Path) -> None:
    """With RabbitMQ (several gateways) a secret must be configured: they must agree."""
    settings = Settings(_env_file=None, state_dir=tmp_path, amqp_url="amqp://x")  # type: ignore[call-arg]
    with pytest.raises(GatewayKeyError, match="BLUME_GATEWAY_SECRET_KEY"):
        GatewayKeys.from_settings(settings, GatewaySettings(_env_file=None))  # type: ignore[call-arg]
    with pytest.raises(GatewayKeyError):
        GatewayKeys.from_secret(b"short")


def test_purpose_keys_differ() -> None:
    """The keys for cookies, CSRF, tickets and code hashes are all different."""
    keys = GatewayKeys.from_secret(b"s" * 40)
    assert len({keys.csrf, keys.cookies, keys.viewer_ticket, keys.code_hash}) == 4


def test_codes_are_six_digits_and_hashes_depend_on_key_and_challenge() -> None:
    """A code is 6 digits; its hash changes with the key and with the challenge."""
    code = new_code()
    assert code.isdigit()
    assert len(code) == 6
    assert code_hash(b"a", "otp_1", code) != code_hash(b"b", "otp_1", code)
    assert code_hash(b"a", "otp_1", code) != code_hash(b"a", "otp_2", code)
    assert normalise_code(" 123-456 ") == "123456"


async def test_the_server_serves_on_the_loop_and_stops(harness: Harness) -> None:
    """HttpServer starts uvicorn as a task on this loop, answers, and stops on request."""
    server = HttpServer(harness.gateway, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{server.port}/healthz")
        assert health.json() == {"status": "ok"}
        assert health.headers["cache-control"] == "no-store"
        assert "server" not in health.headers
    finally:
        await server.stop()


def test_a_busy_port_is_an_error_for_the_caller() -> None:
    """Binding a port in use raises OSError (uvicorn would have exited the whole process)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            bind("127.0.0.1", taken.getsockname()[1])


def test_a_user_agent_is_capped_and_normalised_before_it_is_recorded() -> None:
    """A 512-character user agent with controls, bidi and non-ASCII characters is kept as
    at most 200 printable ASCII characters with single spaces; an empty one is None."""
    forged = "Mozilla/5.0\t\t(X11;\u202e Linux)\r\n" + "é" * 10 + "A" * 512
    kept = normalised_user_agent(forged)
    assert kept is not None
    assert len(kept) == 200
    assert kept.startswith("Mozilla/5.0 (X11;? Linux) ??????????AAA")
    assert all(" " <= c <= "~" for c in kept)
    assert normalised_user_agent("Mozilla/5.0 (X11; Linux)") == "Mozilla/5.0 (X11; Linux)"
    assert normalised_user_agent(" \t ") is None
    assert normalised_user_agent(None) is None


def test_the_denial_tally_stays_bounded_and_keeps_counts_it_could_not_record() -> None:
    """Past its bucket limit every denial is recorded at once (nothing is lost, memory is
    bounded); counts put back after a failed write are recorded in the next round."""
    now = datetime(2026, 12, 7, 1, 0, 30, tzinfo=UTC)
    tally = DenialTally(max_buckets=1)
    first = ClientContext(client_ip="203.0.113.1")
    second = ClientContext(client_ip="203.0.113.2")
    assert tally.record_now(first, "unknown", now) is True
    assert tally.record_now(first, "unknown", now) is False
    assert [tally.record_now(second, "unknown", now) for _ in range(3)] == [True] * 3
    later = now + timedelta(minutes=1)
    [counted] = tally.due(later)
    assert (counted.client, counted.count) == (first, 1)
    tally.restore([counted])
    assert [bucket.count for bucket in tally.due(later)] == [1]
    assert tally.due(later) == []
