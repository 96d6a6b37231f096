"""Each request's span, when a tracer provider is set, is named by the route template and
carries it; with none set no span is started, and the request is counted all the same."""

from __future__ import annotations

import pytest
from blume_access_gateway.http_telemetry import HttpTelemetryMiddleware
from blume_runtime.metrics import HTTP_REQUESTS
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.types import Message, Receive, Scope, Send

ROUTE = "/probe/{token}"


class _Route:
    path = ROUTE


async def _routed_app(scope: Scope, _receive: Receive, send: Send) -> None:
    scope["route"] = _Route()  # as the router does
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _request() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    middleware = HttpTelemetryMiddleware(_routed_app)
    await middleware({"type": "http", "method": "GET", "path": "/probe/secret"}, receive, send)
    assert sent[0]["status"] == 204


async def test_with_a_provider_the_span_names_the_route_template(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A provider set: one SERVER span, "GET /probe/{token}", http.route and the status."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    await _request()
    [span] = exporter.get_finished_spans()
    assert span.name == f"GET {ROUTE}"
    assert span.attributes is not None
    assert span.attributes["http.route"] == ROUTE
    assert span.attributes["http.response.status_code"] == 204
    assert "secret" not in repr(span.to_json())


async def test_without_a_provider_no_span_is_started_and_the_request_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No provider: the tracer is never asked for a span; the counter still moves."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)

    def no_tracer(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a span was started")

    monkeypatch.setattr(trace, "get_tracer", no_tracer)
    counted = HTTP_REQUESTS.labels(route=ROUTE, status="204")
    before = counted._value.get()
    await _request()
    assert counted._value.get() == before + 1
