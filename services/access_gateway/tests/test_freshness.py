"""Fail closed: when the gateway cannot show its projections are current, it grants nothing.

``Freshness`` against a probe and a clock the test controls; then the pages' answer (503,
"try again shortly") while stale, and the grant they give once current again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from blume_access_gateway.freshness import Freshness, QueueProbe, Staleness, queue_probe
from blume_access_gateway.models import LinkGrant
from blume_access_gateway.projections import NAME
from blume_runtime.testing import FakeMonotonicClock as Clock
from blume_runtime.topology import QueueSpec
from blume_runtime.transport import InMemoryTransport, OutgoingMessage

from services.access_gateway.tests.conftest import Harness, csrf_for
from services.access_gateway.tests.test_blume_deep_link import sign_in_patient

MAX_LAG = 5.0


@dataclass
class Queue:
    """The probe's answers, and how often it was asked."""

    attached: bool = True
    pending: int | None = 0
    asked: int = 0
    failing: bool = False

    async def probe(self) -> QueueProbe:
        self.asked += 1
        if self.failing:
            raise ConnectionError("broker unreachable")
        return QueueProbe(attached=self.attached, pending=self.pending)


def produced(clock: Clock, seconds_ago: float) -> datetime:
    return datetime.fromtimestamp(clock.now - seconds_ago, UTC)


@pytest.fixture
def queue() -> Queue:
    return Queue()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def freshness(queue: Queue, clock: Clock) -> Freshness:
    return Freshness(MAX_LAG, queue.probe, clock=clock)


async def test_an_empty_queue_with_its_consumer_attached_is_current(
    freshness: Freshness,
) -> None:
    """Nothing waiting, consumer attached: the projections may be trusted."""
    assert await freshness.stale() is None


async def test_a_detached_consumer_is_stale_whatever_the_queue(
    freshness: Freshness, queue: Queue
) -> None:
    """No live consumer on the gateway's queue: events may be piling up unseen."""
    queue.attached = False
    assert await freshness.stale() is Staleness.DETACHED


async def test_a_probe_that_fails_or_cannot_count_is_stale(
    freshness: Freshness, queue: Queue, clock: Clock
) -> None:
    """A broker that cannot be asked, or cannot say how much waits, shows nothing current."""
    queue.failing = True
    assert await freshness.stale() is Staleness.DETACHED
    queue.failing = False
    queue.pending = None
    clock.advance(1)
    assert await freshness.stale() is Staleness.DETACHED


async def test_without_a_probe_nothing_is_current() -> None:
    """A gateway not yet attached to its transport grants nothing."""
    assert await Freshness(MAX_LAG).stale() is Staleness.DETACHED


async def test_a_backlog_younger_than_the_threshold_is_current(
    freshness: Freshness, queue: Queue, clock: Clock
) -> None:
    """Messages arrived since the queue was last seen empty, within the threshold: current."""
    assert await freshness.stale() is None
    queue.pending = 3
    clock.advance(MAX_LAG - 1)
    assert await freshness.stale() is None


async def test_a_backlog_older_than_the_threshold_is_behind(
    freshness: Freshness, queue: Queue, clock: Clock
) -> None:
    """Non-empty since longer than the threshold and nothing newer applied: behind."""
    assert await freshness.stale() is None
    queue.pending = 3
    clock.advance(MAX_LAG + 1)
    assert await freshness.stale() is Staleness.BEHIND


async def test_applying_recent_events_through_a_busy_queue_stays_current(
    freshness: Freshness, queue: Queue, clock: Clock
) -> None:
    """A queue never seen empty, but the consumer applying events produced a moment ago:
    the backlog is at most that old, so access continues."""
    queue.pending = 10
    assert await freshness.stale() is Staleness.BEHIND  # nothing known yet
    clock.advance(1)
    freshness.applied(produced(clock, seconds_ago=0.5))
    assert await freshness.stale() is None
    clock.advance(MAX_LAG + 1)
    assert await freshness.stale() is Staleness.BEHIND


async def test_applying_old_events_after_an_outage_is_still_behind(
    freshness: Freshness, queue: Queue, clock: Clock
) -> None:
    """After an outage the consumer works through events minutes old: still behind until it
    reaches events within the threshold or empties the queue."""
    queue.pending = 500
    freshness.applied(produced(clock, seconds_ago=120))
    assert await freshness.stale() is Staleness.BEHIND
    clock.advance(1)
    queue.pending = 0
    assert await freshness.stale() is None


async def test_an_event_from_a_producer_clock_ahead_does_not_extend_the_grace(
    freshness: Freshness, queue: Queue, clock: Clock
) -> None:
    """An applied event stamped a minute in our future counts as produced now at the latest:
    past the threshold with the queue still busy, the gateway is behind."""
    queue.pending = 10
    freshness.applied(produced(clock, seconds_ago=-60))
    assert await freshness.stale() is None
    clock.advance(MAX_LAG + 1)
    assert await freshness.stale() is Staleness.BEHIND


async def test_an_event_waiting_for_its_retry_counts_as_waiting() -> None:
    """A projection that failed and waits in a delay queue is part of the backlog: the probe
    counts it, and the gateway is behind once it has waited past the threshold."""
    transport = InMemoryTransport()
    spec = QueueSpec(NAME, ("share.revoked",))
    transport.subscribe(spec, consumer=lambda _delivery: asyncio.sleep(0))  # type: ignore[arg-type]
    await transport.start()
    try:
        probe = queue_probe(transport, NAME)
        assert await probe() == QueueProbe(attached=True, pending=0)
        transport.schedule(OutgoingMessage("share.revoked", b"{}", "e-1"), spec, 3600)
        assert await probe() == QueueProbe(attached=True, pending=1)
        clock = Clock()
        freshness = Freshness(MAX_LAG, probe, clock=clock)
        freshness.applied(produced(clock, seconds_ago=0))
        assert await freshness.stale() is None
        clock.advance(MAX_LAG + 1)
        assert await freshness.stale() is Staleness.BEHIND
    finally:
        await transport.stop()


async def test_the_queue_is_probed_at_most_every_interval(
    freshness: Freshness, queue: Queue, clock: Clock
) -> None:
    """Many requests in a burst share one probe (one passive declare on RabbitMQ)."""
    for _ in range(20):
        await freshness.stale()
    assert queue.asked == 1
    clock.advance(1)
    await freshness.stale()
    assert queue.asked == 2


def test_stale_link_page_is_503_try_again_and_audited(harness: Harness) -> None:
    """While stale, a link, even a good one, gets the "try again shortly" page (503 with
    Retry-After), and the refusal is audited as not_current."""
    token, _link = harness.add_link()
    harness.freshness.staleness = Staleness.BEHIND
    with harness.client() as client:
        page = client.get(f"/s/{token}")
    assert page.status_code == 503
    assert "Please try again shortly" in page.text
    assert page.headers["retry-after"] == "5"
    [denied] = harness.transport.events("share.link.denied")
    assert denied["data"]["reason"] == "not_current"
    assert harness.transport.events("share.link.opened") == []


def test_no_grant_while_stale_then_granted_once_current(harness: Harness) -> None:
    """ "View study" pressed while the consumer is detached grants no use; once current
    again the same press grants."""
    token, _link = harness.add_link()
    with harness.client() as client:
        page = client.get(f"/s/{token}")
        csrf = csrf_for(page.text, f"/s/{token}")
        harness.freshness.staleness = Staleness.DETACHED
        refused = client.post(f"/s/{token}", data={"csrf": csrf})
        assert refused.status_code == 503
        assert harness.rows(LinkGrant) == []
        harness.freshness.staleness = None
        granted = client.post(f"/s/{token}", data={"csrf": csrf})
    assert granted.status_code == 303
    assert len(harness.rows(LinkGrant)) == 1


def test_stale_portal_study_is_503_try_again(harness: Harness) -> None:
    """The patient's own visible entry is not shown on stale projections: 503, no view."""
    harness.add_patient("bp-0001")
    entry = harness.add_entry("bp-0001")
    with harness.client() as client:
        sign_in_patient(harness, client, "/blume/", "bp-0001")
        harness.freshness.staleness = Staleness.BEHIND
        response = client.get(f"/blume/studies/{entry.entry_id}")
    assert response.status_code == 503
    assert "Please try again shortly" in response.text
    assert harness.transport.events("share.blume.viewed") == []
