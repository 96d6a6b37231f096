"""Each HTTP request counted and traced by its route template, never by its raw path.

A raw path holds the link's token (``/s/<token>``); the route template (``/s/{token}``)
does not, so only the template becomes a metric label or a span attribute. Requests no
route matched count as ``unmatched``: a scanner's paths must not grow the label set.

The request's span starts a trace of its own: a recipient opens a link days after the
share, so the events the request emits join the share's trace while this span only links
to it (``UnitOfWork.emit``). With no tracer provider set (``configure_tracing`` found no
OTLP endpoint) every span would be a no-op that records nothing, and starting one costs
about a twentieth of the gateway's CPU per proxied image: none is started then.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Final

from blume_runtime.metrics import HTTP_REQUESTS
from blume_runtime.tracing import linked
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED: Final = "unmatched"
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods named as they are; any other (a client chooses it) is ``_OTHER``, as OpenTelemetry's
HTTP conventions say, so a span name stays short and of a known set."""


class HttpTelemetryMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        method = str(scope.get("method", "GET"))
        method = method if method in METHODS else "_OTHER"

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        traced = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        spanning = (
            linked(f"{method} {UNMATCHED}", None, {"http.request.method": method})
            if traced
            else nullcontext(INVALID_SPAN)
        )
        with spanning as span:
            try:
                await self.app(scope, receive, recording_send)
            finally:
                # The router writes the matched route into this same scope.
                route = getattr(scope.get("route"), "path", None) or UNMATCHED
                HTTP_REQUESTS.labels(route=route, status=str(status)).inc()
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
