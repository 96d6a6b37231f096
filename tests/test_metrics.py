"""``/metrics`` on a running ``blume-share run`` after one share, read as Prometheus reads it.

Real RabbitMQ, PostgreSQL and SMTP; the exposition is parsed with prometheus-client's own
parser, so a malformed line fails the test as it would fail a scrape.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningSystem, request_event
from tests.test_end_to_end import LINK, email_text

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(system: RunningSystem) -> tuple[str, Samples]:
    url = f"http://127.0.0.1:{system.env['BLUME_OPS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, series), v in samples.items() if n == name and wanted <= series)


def status_of(url: str) -> int:
    request = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


async def test_metrics_count_the_share_the_email_the_audit_and_the_open(
    system: RunningSystem, smtp_server: Any
) -> None:
    """After one share and one open of its link: messages handled per service, the link
    email sent, audit records sealed, the open counted under the route template (never the
    token), build info; and no token or address anywhere in the exposition."""
    system.publish(request_event())
    [accepted] = await system.wait_for("share.accepted")
    await system.wait_for("share.completed", share_id=accepted["data"]["share_id"])
    [message] = await smtp_server.wait_for(1)
    token = LINK.findall(email_text(message))[0]
    assert status_of(f"{system.http_base}/s/{token}") == 200

    deadline = time.monotonic() + 30
    while True:  # the sealer and the last acks run just after share.completed
        text, samples = await asyncio.to_thread(scrape, system)
        sealed = value(samples, "blume_audit_records_sealed_total")
        if sealed >= len(system.events("share.completed")) + 4 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)

    handled = "blume_messages_handled_total"
    for service, event_type in [
        ("share_dispatcher", "study.send.requested"),
        ("link_issuer", "share.link.requested"),
        ("notifier", "share.link.issued"),
        ("audit_sink", "study.send.requested"),  # the rest its producers stage
    ]:
        assert value(samples, handled, service=service, event_type=event_type, outcome="ack") >= 1
    assert value(samples, "blume_emails_total", kind="link", outcome="sent") == 1
    assert sealed >= 5
    assert value(samples, "blume_link_events_total", event="opened") == 1
    assert value(samples, "blume_http_requests_total", route="/s/{token}", status="200") == 1
    assert value(samples, "blume_build_info") == 1
    assert token not in text
    assert "bob.jones" not in text
