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
