"""The shared pipeline: dedupe, transactional outbox, retries and dead-lettering.

Runs on the embedded transport and SQLite, with a test service of its own.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from blume_contracts.envelope import CloudEvent, now
from blume_contracts.events import ShareAccepted, ShareCompleted
from blume_runtime.app import Runtime
from blume_runtime.db import Database, OutboxMessage
from blume_runtime.identity import EMBEDDED_BROKER_USER
from blume_runtime.outbox import OutboxRelay
from blume_runtime.service import HandlerContext, PermanentError, Service
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeDelivery, RecordingTransport
from blume_runtime.transport import InMemoryTransport, OutgoingMessage
from blume_runtime.worker import Worker
from sqlmodel import select

from runtime.tests.db_support import NO_AUDIT_STORE

SHARE = "shr_" + "a" * 32


def accepted(event_id: str = "evt-1", share_id: str = SHARE) -> OutgoingMessage:
    event = CloudEvent[ShareAccepted](
        id=event_id,
        source="/test",
        type="share.accepted",
        time=now(),
        tenantid="demo-hospital",
        correlationid="corr-1",
        data=ShareAccepted(share_id=share_id, method="external_link", expires_at=now()),
    )
    return OutgoingMessage("share.accepted", event.model_dump_json().encode(), event.id)


class Recorder:
    """A test service: completes every accepted share, failing on demand."""

    def __init__(self, failures: int = 0, permanent: bool = False) -> None:
        self.calls = 0
        self.failures = failures
        self.permanent = permanent
        self.seen: list[CloudEvent[Any]] = []
        self.service = Service("recorder")
        self.service.handles("share.accepted")(self.handle)
        self.completions = Service("completions")
        self.completions.handles("share.completed")(self.observe)

    async def handle(self, event: CloudEvent[ShareAccepted], ctx: HandlerContext) -> None:
        self.calls += 1
        ctx.emit(
            "share.completed",
            ShareCompleted(
                share_id=event.data.share_id, method="external_link", completed_at=now()
            ),
        )
        if self.calls <= self.failures:
            if self.permanent:
                raise PermanentError("cannot ever work")
            raise ConnectionError("dependency down")

    async def observe(self, event: CloudEvent[ShareCompleted], _ctx: HandlerContext) -> None:
        self.seen.append(event)


def runtime_for(db: Database, recorder: Recorder, tmp_path: Path) -> Runtime:
    settings = Settings(
        state_dir=tmp_path, max_attempts=3, retry_delay_seconds=0.05, audit_copies=NO_AUDIT_STORE
    )
    return Runtime(settings, [recorder.service, recorder.completions], db)


async def run(runtime: Runtime, *messages: OutgoingMessage) -> InMemoryTransport:
    await runtime.start()
    try:
        for message in messages:
            await runtime.publish(message)
        await runtime.wait_until_idle()
    finally:
        await runtime.stop()
    assert isinstance(runtime.transport, InMemoryTransport)
    return runtime.transport


async def test_emitted_event_is_published_after_commit(db: Database, tmp_path: Path) -> None:
    """An event emitted by a handler reaches its consumer, with the correlation id carried."""
    recorder = Recorder()
    await run(runtime_for(db, recorder, tmp_path), accepted())
    assert [event.data.share_id for event in recorder.seen] == [SHARE]
    assert recorder.seen[0].correlationid == "corr-1"
    assert recorder.seen[0].source == "/blume-share/recorder"
    async with db.transaction() as session:
        assert (await session.exec(select(OutboxMessage))).all() == []


async def test_redelivered_message_has_no_second_effect(db: Database, tmp_path: Path) -> None:
    """The same message delivered twice runs the handler once and emits once."""
    recorder = Recorder()
    await run(runtime_for(db, recorder, tmp_path), accepted(), accepted())
    assert recorder.calls == 1
    assert len(recorder.seen) == 1


async def test_transient_failure_is_retried_without_duplicate_events(
    db: Database, tmp_path: Path
) -> None:
    """A failing attempt rolls back its outbox rows; the retry emits exactly once."""
    recorder = Recorder(failures=2)
    transport = await run(runtime_for(db, recorder, tmp_path), accepted())
    assert recorder.calls == 3
    assert len(recorder.seen) == 1
    assert transport.dead_letters == {}


async def test_exhausted_retries_dead_letter(db: Database, tmp_path: Path) -> None:
    """After the last attempt the message goes to the service's DLQ, with no effect."""
    recorder = Recorder(failures=99)
    transport = await run(runtime_for(db, recorder, tmp_path), accepted())
    assert recorder.calls == 3
    assert recorder.seen == []
    assert [m.message_id for m in transport.dead_letters["blume.share.recorder.dlq"]] == ["evt-1"]


async def test_permanent_failure_dead_letters_at_once(db: Database, tmp_path: Path) -> None:
    """A permanent error is not retried."""
    recorder = Recorder(failures=1, permanent=True)
    transport = await run(runtime_for(db, recorder, tmp_path), accepted())
    assert recorder.calls == 1
    assert len(transport.dead_letters["blume.share.recorder.dlq"]) == 1


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", json.dumps({"specversion": "1.0", "id": "x"}).encode(), b""],
    ids=["not-json", "array", "incomplete-envelope", "empty"],
)
async def test_malformed_message_is_dead_lettered_and_queue_flows(
    db: Database, tmp_path: Path, body: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message that is not a CloudEvent is dead-lettered, unlogged, and does not block."""
    recorder = Recorder()
    poison = OutgoingMessage("share.accepted", body, "poison")
    transport = await run(runtime_for(db, recorder, tmp_path), poison, accepted("evt-2"))
    assert [m.message_id for m in transport.dead_letters["blume.share.recorder.dlq"]] == ["poison"]
    assert recorder.calls == 1
    if body:
        logged = capsys.readouterr()
        assert body.decode() not in logged.out + logged.err


async def test_invalid_internal_event_is_dead_lettered(db: Database, tmp_path: Path) -> None:
    """An event whose data breaks its contract never reaches the handler."""
    recorder = Recorder()
    broken = accepted()
    document = json.loads(broken.body)
    document["data"]["share_id"] = "not-a-share-id"
    message = OutgoingMessage("share.accepted", json.dumps(document).encode(), "evt-1")
    transport = await run(runtime_for(db, recorder, tmp_path), message)
    assert recorder.calls == 0
    assert len(transport.dead_letters["blume.share.recorder.dlq"]) == 1


async def test_outbox_sweep_publishes_rows_left_behind(db: Database, tmp_path: Path) -> None:
    """A committed outbox row whose publish never happened is published by the sweep."""
    recorder = Recorder()
    runtime = runtime_for(db, recorder, tmp_path)
    completed = CloudEvent[ShareCompleted](
        id="left-behind",
        source="/test",
        type="share.completed",
        time=now(),
        tenantid="demo-hospital",
        correlationid="corr-9",
        data=ShareCompleted(share_id=SHARE, method="external_link", completed_at=now()),
    )
    async with db.transaction() as session:
        session.add(
            OutboxMessage(
                event_id=completed.id,
                routing_key=completed.type,
                body=completed.model_dump_json().encode(),
                created_at=completed.time,
            )
        )
    await runtime.start()
    try:
        assert await runtime.sweep(older_than=timedelta(0)) == 1
        await runtime.wait_until_idle()
    finally:
        await runtime.stop()
    assert [event.correlationid for event in recorder.seen] == ["corr-9"]


def as_delivery(message: OutgoingMessage) -> FakeDelivery:
    return FakeDelivery(
        message.body,
        message_id=message.message_id,
        routing_key=message.routing_key,
        producer=EMBEDDED_BROKER_USER,
    )


async def test_a_crash_before_a_published_row_is_deleted_republishes_it_deduped(
    db: Database, tmp_path: Path
) -> None:
    """A process dies after publishing an event but before any transaction deleted its row:
    after the restart the sweep publishes the event again, and its consumer acks the second
    copy as a duplicate, with no second effect."""
    recorder = Recorder()
    settings = Settings(state_dir=tmp_path, audit_copies=NO_AUDIT_STORE)
    before_crash = RecordingTransport()
    producer = Worker(recorder.service, db, OutboxRelay(db, before_crash), settings)
    await producer(FakeDelivery.of(CloudEvent[Any].model_validate_json(accepted().body)))
    [first_copy] = before_crash.published
    restarted = Database(db.url)  # a new process: the deletion it had pending is lost
    try:
        after_restart = RecordingTransport()
        assert await OutboxRelay(restarted, after_restart).sweep(older_than=timedelta(0)) == 1
        [second_copy] = after_restart.published
        assert second_copy.message_id == first_copy.message_id
        consumer = Worker(recorder.completions, restarted, OutboxRelay(restarted, after_restart))
        deliveries = [as_delivery(first_copy), as_delivery(second_copy)]
        for delivery in deliveries:
            await consumer(delivery)
    finally:
        await restarted.dispose()
    assert [delivery.settlement for delivery in deliveries] == ["ack", "ack"]
    assert [event.id for event in recorder.seen] == [first_copy.message_id]


async def test_concurrent_duplicates_apply_once(db: Database, tmp_path: Path) -> None:
    """Two deliveries of one message racing each other still have one effect."""
    recorder = Recorder()
    runtime = runtime_for(db, recorder, tmp_path)
    await runtime.start()
    try:
        await asyncio.gather(runtime.publish(accepted()), runtime.publish(accepted()))
        await runtime.wait_until_idle()
    finally:
        await runtime.stop()
    assert len(recorder.seen) == 1
