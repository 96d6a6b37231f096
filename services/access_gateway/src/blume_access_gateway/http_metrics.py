"""Counting HTTP requests by route template and status, never by raw path.

A raw path holds the link's token (``/s/<token>``); the route template (``/s/{token}``)
does not, so only the template is a label. Requests no route matched count as
``unmatched``: a scanner's paths must not grow the label set either.
"""

from __future__ import annotations

from typing import Final

from blume_runtime.metrics import HTTP_REQUESTS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED: Final = "unmatched"


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            # The router writes the matched route into this same scope.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            HTTP_REQUESTS.labels(route=route, status=str(status)).inc()
