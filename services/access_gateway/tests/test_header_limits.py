"""Oversized request headers are refused with 431 before anything parses them, and the
gateway reads its cookies without Python's quadratic cookie unquoting (CVE-2024-7592)."""

from __future__ import annotations

import asyncio
import http.cookies
from typing import Any

import httpx
import pytest
from blume_access_gateway.security import MAX_REQUEST_HEAD_BYTES, HeaderLimitMiddleware
from blume_access_gateway.server import HttpServer

from services.access_gateway.tests.conftest import Harness

CRAFTED = '"' + "\\" * 7000 + '"'
"""A cookie value of backslashes: ~0.2 s of CPU in http.cookies._unquote on Python 3.11.7."""


def test_a_header_over_8_kib_or_headers_over_32_kib_in_all_answer_431(harness: Harness) -> None:
    """One 8 KiB + 1 header, or five 7 KiB headers, are 431; a 7 KiB header alone passes."""
    with harness.client() as client:
        one_big = client.get("/healthz", headers={"x-big": "a" * (8 * 1024)})
        many = client.get("/healthz", headers={f"x-part-{n}": "a" * (7 * 1024) for n in range(5)})
        fine = client.get("/healthz", headers={"x-part": "a" * (7 * 1024)})
    assert one_big.status_code == 431
    assert many.status_code == 431
    assert fine.status_code == 200


def test_quoted_cookie_values_never_reach_http_cookies_unquote(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page that reads the patient's cookie, sent a crafted quoted Cookie value beside a
    plain one, answers without handing the quoted value to http.cookies._unquote (which
    Starlette calls per value, and FastAPI on every request)."""
    original = http.cookies._unquote  # type: ignore[attr-defined]
    seen: list[str] = []

    def watched(value: str) -> str:
        seen.append(value)
        assert not value.startswith('"'), "a quoted cookie value reached _unquote"
        return str(original(value))

    monkeypatch.setattr(http.cookies, "_unquote", watched)
    with harness.client() as client:
        answer = client.get(
            "/blume/studies/ent_" + "0" * 32,
            headers={"cookie": f"blume_patient={CRAFTED}; other=plain"},
        )
    assert answer.status_code in (302, 303, 307, 404)
    assert seen == ["plain"]


async def test_only_quoted_cookie_values_are_dropped() -> None:
    """Cookie pairs whose value is in double quotes go; every other pair stays, in order."""
    received: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: dict[str, Any], _receive: Any, _send: Any) -> None:
        received.append(scope["headers"])

    middleware = HeaderLimitMiddleware(app)
    headers = [(b"cookie", b'a=1; b="x\\y"; c=tok.en-_'), (b"x-other", b'"kept"')]
    await middleware({"type": "http", "headers": headers}, None, None)
    assert received == [[(b"cookie", b"a=1; c=tok.en-_"), (b"x-other", b'"kept"')]]


async def test_the_served_gateway_answers_431_between_the_parsers_default_and_its_limit(
    harness: Harness,
) -> None:
    """Through uvicorn itself: 20 KiB of headers (past h11's 16 KiB default, which
    answered 400 when the server parsed with h11) reach the middleware and get 431."""
    server = HttpServer(harness.gateway, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.get(
                f"http://127.0.0.1:{server.port}/healthz",
                headers={f"x-part-{n}": "a" * (5 * 1024) for n in range(4)}
                | {"x-big": "b" * (8 * 1024 + 1)},
            )
        assert answer.status_code == 431
    finally:
        await server.stop()


async def _head_sent_in_pieces(port: int, pieces: int) -> bytes:
    """A request line, then one header value sent 16 KiB at a time, never ended: what the
    server answered before it closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Endless: ")
        for _ in range(pieces):
            writer.write(b"a" * (16 * 1024))
            await writer.drain()
            await asyncio.sleep(0.02)  # separate reads on the server's side
    except ConnectionError:
        pass  # closed by the server while the head was still coming
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    return answer


async def test_the_served_gateway_refuses_a_request_head_past_its_bound(
    harness: Harness,
) -> None:
    """One header value sent in pieces past MAX_REQUEST_HEAD_BYTES, never ended: a 400 and
    the connection closed (httptools alone would keep buffering it); the server still
    answers the next request."""
    server = HttpServer(harness.gateway, "127.0.0.1", 0)
    await server.start()
    try:
        pieces = MAX_REQUEST_HEAD_BYTES // (16 * 1024) + 3
        answer = await _head_sent_in_pieces(server.port, pieces)
        assert answer.startswith(b"HTTP/1.1 400 ")
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{server.port}/healthz")).status_code == 200
    finally:
        await server.stop()


async def _head_in_one_write(port: int, target: str) -> bytes:
    """A whole request head, ``target`` as its URL, written at once (one read on the
    server's side over loopback): what the server answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


async def test_the_served_gateway_refuses_a_head_past_its_bound_that_comes_in_one_read(
    harness: Harness,
) -> None:
    """A URL longer than MAX_REQUEST_HEAD_BYTES in a head that arrives whole: a 400, not
    served (no header is large, so only the head's bound can refuse it); a long URL under
    the bound is still served."""
    server = HttpServer(harness.gateway, "127.0.0.1", 0)
    await server.start()
    try:
        too_long = await _head_in_one_write(
            server.port, "/healthz?pad=" + "a" * (MAX_REQUEST_HEAD_BYTES + 1024)
        )
        assert too_long.startswith(b"HTTP/1.1 400 ")
        assert too_long.endswith(b"Request head too large")
        within = await _head_in_one_write(server.port, "/healthz?pad=" + "a" * (32 * 1024))
        assert within.startswith(b"HTTP/1.1 200 ")
    finally:
        await server.stop()
