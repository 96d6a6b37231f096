"""What every response carries, and what never leaves the gateway in a log or an error.

- Headers: no caching anywhere (a shared computer's back button must not show a study
  page), no referrer (the link token is in our URLs), a strict Content-Security-Policy
  (our own origin only; no inline script or style; no framing), no MIME sniffing, no indexing.
- The access log names the route template (``/s/{token}``), never the path: paths carry
  link tokens. Unhandled errors are logged by type only and answered with a plain page.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Final

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("access_gateway")

_CSP_BASE: Final = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
)


def content_security_policy(form_targets: Iterable[str] = ()) -> str:
    """Our own origin only; a page whose form leads to an identity provider names that
    origin in ``form-action`` (browsers check the redirect after a form post against it)."""
    form_action = " ".join(["'self'", *sorted(set(form_targets))])
    return "; ".join([*_CSP_BASE, f"form-action {form_action}"])


def security_headers(*, hsts: bool) -> dict[str, str]:
    headers = {
        "cache-control": "no-store",
        "pragma": "no-cache",
        "referrer-policy": "no-referrer",
        "content-security-policy": content_security_policy(),
        "x-content-type-options": "nosniff",
        "x-robots-tag": "noindex, nofollow",
        "x-frame-options": "DENY",
        "cross-origin-opener-policy": "same-origin",
        "cross-origin-resource-policy": "same-origin",
        "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    }
    if hsts:
        headers["strict-transport-security"] = "max-age=31536000"
    return headers


ErrorPage = Callable[[Scope], Awaitable[tuple[int, dict[str, str], bytes]]]


class SecurityMiddleware:
    """Adds the headers to every response (a route may set a stricter CSP of its own),
    logs each request by route template, and turns an unhandled error into a plain 500."""

    def __init__(self, app: ASGIApp, *, hsts: bool, error_page: ErrorPage) -> None:
        self.app = app
        self._headers = [
            (name.encode(), value.encode()) for name, value in security_headers(hsts=hsts).items()
        ]
        self._error_page = error_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((name, value) for name, value in self._headers if name not in present),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as error:
            # The type and where it was raised; never the message, which may quote input.
            frames = traceback.extract_tb(error.__traceback__)
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
            log.error(
                "request failed", error_type=type(error).__name__, where=where, route=_route(scope)
            )
            if response_started:
                raise
            status, headers, body = await self._error_page(scope)
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            log.info(
                "http request",
                method=scope.get("method"),
                route=_route(scope),
                status=status,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "(unmatched)"


MAX_HEADER_BYTES: Final = 8 * 1024
"""One request header, name and value, at most (RFC 6585 431 above it)."""
MAX_HEADERS_TOTAL_BYTES: Final = 32 * 1024
"""All request headers together at most."""
MAX_REQUEST_HEAD_BYTES: Final = 48 * 1024
"""What the server buffers of a request head (request line and headers): larger heads are
refused (400) before any of our code runs (``server.BoundedHeadProtocol``); up to it,
``HeaderLimitMiddleware`` decides."""

_TOO_LARGE_BODY: Final = b"Request header fields too large\n"


class HeaderLimitMiddleware:
    """The outermost layer: a request with a header over 8 KiB, or over 32 KiB of headers in
    all, is answered 431 before anything parses a cookie or routes it; quoted cookie values
    are dropped.

    A crafted Cookie header costs quadratic CPU in Python's ``http.cookies._unquote`` before
    3.11.10 / 3.12.6 (CVE-2024-7592): about 0.2 s for one 8 KiB value of backslashes on
    3.11.7, still under the cap. Starlette unquotes every cookie value and FastAPI reads
    ``request.cookies`` for every request, but ``_unquote`` only works on a value in double
    quotes, and our cookies (URL-safe signed tokens) never are: dropping quoted values
    leaves it nothing to chew on.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(
            name == b"cookie" and b'"' in value for name, value in scope.get("headers", [])
        ):
            scope = {**scope, "headers": _without_quoted_cookies(scope["headers"])}
        if scope["type"] == "http" and headers_too_large(scope.get("headers", [])):
            await send(
                {
                    "type": "http.response.start",
                    "status": 431,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(_TOO_LARGE_BODY)).encode()),
                        (b"cache-control", b"no-store"),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _TOO_LARGE_BODY})
            return
        await self.app(scope, receive, send)


def _without_quoted_cookies(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [
        (name, _unquoted_pairs(value) if name == b"cookie" else value) for name, value in headers
    ]


def _unquoted_pairs(cookie: bytes) -> bytes:
    pairs = (pair.strip() for pair in cookie.split(b";"))
    return b"; ".join(
        pair for pair in pairs if pair and not pair.partition(b"=")[2].strip().startswith(b'"')
    )


def headers_too_large(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    total = 0
    for name, value in headers:
        size = len(name) + len(value)
        if size > MAX_HEADER_BYTES:
            return True
        total += size
    return total > MAX_HEADERS_TOTAL_BYTES
