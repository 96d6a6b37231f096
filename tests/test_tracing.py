"""One trace per share, across every hop: real RabbitMQ, PostgreSQL, SMTP and an OTLP sink.

The request carries a W3C ``traceparent``; every event the workers emit and the events the
gateway emits when the link is opened and used carry the same trace id, and so do the log
lines written while handling them. With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the spans
(handling, database transactions, publishing, SMTP, the HTTP request) reach the collector,
decoded here with OpenTelemetry's own protobuf classes, and carry no PHI.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import secrets
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import RunningSystem, free_port, request_event
from tests.test_end_to_end import LINK, PHI, email_text

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TRACE_ID = secrets.token_hex(16)
TRACEPARENT = f"00-{TRACE_ID}-{secrets.token_hex(8)}-01"


class OtlpSink(http.server.ThreadingHTTPServer):
    """Accepts OTLP/HTTP protobuf exports and keeps every span."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _OtlpHandler)
        self.spans: list[Any] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _OtlpHandler(http.server.BaseHTTPRequestHandler):
    server: OtlpSink

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self.server.spans.extend(scope_spans.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture
def otlp_sink() -> Iterator[OtlpSink]:
    sink = OtlpSink()
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()


@pytest.fixture
def system_env(system_env: dict[str, str], otlp_sink: OtlpSink) -> dict[str, str]:
    """The end-to-end environment, exporting spans to the test's collector quickly."""
    return {
        **system_env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_sink.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def open_and_use(system: RunningSystem, token: str) -> None:
    """GET the link page (share.link.opened), then press "View study": the link's policy
    answers with access (share.link.accessed) or a sign-in code (share.otp.requested)."""
    page = urllib.request.urlopen(f"{system.http_base}/s/{token}", timeout=10)
    cookies = "; ".join(c.split(";")[0] for c in page.headers.get_all("Set-Cookie") or [])
    form = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.read().decode()))
    press = urllib.request.Request(
        f"{system.http_base}/s/{token}",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Cookie": cookies, "Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as redirected:  # urllib's view of a 303
        urllib.request.build_opener(_NoRedirect).open(press, timeout=10)
    assert redirected.value.code in {302, 303}


def trace_id_of(event: dict[str, Any]) -> str | None:
    traceparent = event.get("traceparent")
    return traceparent.split("-")[1] if traceparent else None


async def test_one_trace_id_from_the_request_to_the_gateways_events(
    system: RunningSystem, smtp_server: Any, otlp_sink: OtlpSink
) -> None:
    """Every event of the share (the workers' and the gateway's opened and accessed), the
    log lines written while handling them, and the exported spans share the request's trace
    id; the spans cover handling, transactions, publishing, SMTP and the HTTP request, and
    no span attribute holds PHI, the recipient's address or the token."""
    request = request_event(traceparent=TRACEPARENT)
    system.publish(request)
    [accepted] = await system.wait_for("share.accepted")
    await system.wait_for("share.completed", share_id=accepted["data"]["share_id"])
    [message] = await smtp_server.wait_for(1)
    token = LINK.findall(email_text(message))[0]
    open_and_use(system, token)
    share_id = accepted["data"]["share_id"]
    deadline = time.monotonic() + 30
    while not (pressed := system.events("share.link.accessed", share_id=share_id)) and not (
        pressed := system.events("share.otp.requested", share_id=share_id)
    ):
        assert time.monotonic() < deadline, "pressing View study emitted nothing"
        await asyncio.sleep(0.1)

    events = [e for e in system.observed if e.get("correlationid") == request["correlationid"]]
    types = {event["type"] for event in events}
    assert {
        "share.accepted",
        "share.link.requested",
        "share.link.issued",
        "share.notification.sent",
        "share.completed",
        "share.link.opened",
        pressed[0]["type"],
    } <= types
    assert {event["type"]: trace_id_of(event) for event in events} == dict.fromkeys(types, TRACE_ID)

    handled = [
        json.loads(line)
        for line in system.logs().splitlines()
        if line.startswith("{") and request["correlationid"] in line
    ]
    assert handled, "no log line names the request's correlation id"
    assert {line.get("trace_id") for line in handled} == {TRACE_ID}

    deadline = time.monotonic() + 20
    wanted = {"db transaction", "publish", "smtp send"}
    while True:
        with otlp_sink.lock:
            spans = list(otlp_sink.spans)
        names = {span.name for span in spans}
        http_spans = [span for span in spans if span.name.startswith(("GET /s/", "POST /s/"))]
        if (wanted <= names and len(http_spans) >= 2) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert wanted <= names, names
    assert "share_dispatcher process study.send.requested" in names
    assert {span.trace_id.hex() for span in spans if span.name in wanted} >= {TRACE_ID}
    linked = [link.trace_id.hex() for span in http_spans for link in span.links]
    assert TRACE_ID in linked, "the HTTP request's span links to the share's trace"
    assert all(span.trace_id.hex() != TRACE_ID for span in http_spans)

    attributes = " ".join(
        f"{attribute.key}={attribute.value}" for span in spans for attribute in span.attributes
    )
    for secret in [*PHI, token, "bob.jones@clinic.example", "alice@demo-hospital.example"]:
        assert secret not in attributes


async def test_a_request_without_trace_context_gets_one_trace(
    system: RunningSystem, smtp_server: Any
) -> None:
    """A request with no (or an invalid) traceparent is accepted, and every event of its
    share carries one trace id that the product chose."""
    request = request_event(traceparent="not-a-trace-context")
    system.publish(request)
    [accepted] = await system.wait_for("share.accepted")
    await system.wait_for("share.completed", share_id=accepted["data"]["share_id"])
    events = [e for e in system.observed if e.get("correlationid") == request["correlationid"]]
    trace_ids = {trace_id_of(event) for event in events if event["type"] != "study.send.requested"}
    assert len(trace_ids) == 1
    assert None not in trace_ids
