"""Every delivery reaches exactly one terminal decision and exactly one JSON log line.

Each settle path of the worker is driven here with a probe service on SQLite and a fake
delivery that refuses to be settled twice; the log is the production JSON output, parsed.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from blume_runtime.db import Database
from blume_runtime.service import PermanentError, TransientError
from blume_runtime.testing import FakeDelivery
from blume_runtime.transport import DeadLetterCause, deliver

from runtime.tests.pipeline_support import (
    NOW,
    JsonLines,
    Probe,
    accepted_event,
    probe_worker,
    settings_for,
)

PHI = "DOE^JANE"


def body_with_phi(**changes: Any) -> bytes:
    document = json.loads(accepted_event().model_dump_json())
    document["data"]["note"] = PHI
    document.update(changes)
    return json.dumps(document).encode()


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


MALFORMED = {
    "gzip content encoding": (body_with_phi(), {"content_encoding": "gzip"}, "content_encoding"),
    "text/plain": (body_with_phi(), {"content_type": "text/plain"}, "content_type"),
    "no content type": (body_with_phi(), {"content_type": None}, "content_type"),
    "over the size limit": (body_with_phi(pad="x" * 5000), {}, "too_large"),
    "invalid UTF-8": (b'{"id": "\xff' + PHI.encode() + b'"}', {}, "not_utf8"),
    "broken JSON as application/json": (
        b'{"specversion": "1.0", "data": {"name": "' + PHI.encode(),
        {"content_type": "application/json"},
        "not_json",
    ),
    "a JSON array": (b'["' + PHI.encode() + b'"]', {}, "not_an_object"),
    "NaN": (b'{"note": NaN, "name": "' + PHI.encode() + b'"}', {}, "not_json"),
    "nesting bomb": (nested(40), {}, "too_deep"),
    "lone surrogate": (body_with_phi(extra="\ud800"), {}, "lone_surrogate"),
    "UTF-8 byte order mark": (b"\xef\xbb\xbf" + body_with_phi(), {}, "not_json"),
    "empty body": (b"", {}, "not_json"),
}


@pytest.mark.parametrize(("body", "properties", "problem"), MALFORMED.values(), ids=MALFORMED)
async def test_malformed_delivery_is_dead_lettered_with_one_line_and_no_body(
    db: Database,
    tmp_path: Path,
    json_lines: JsonLines,
    body: bytes,
    properties: dict[str, Any],
    problem: str,
) -> None:
    """Unreadable bodies never reach a handler: one dead letter (malformed), one line naming
    the problem, the size and content type, and nothing of the body."""
    probe = Probe()
    worker, _ = probe_worker(db, probe, settings_for(tmp_path, max_message_bytes=4096))
    delivery = FakeDelivery(body, message_id="m-1", routing_key="share.accepted", **properties)
    await worker(delivery)

    assert (delivery.settlement, delivery.cause) == ("dead_letter", DeadLetterCause.MALFORMED)
    assert probe.calls == 0
    (line,) = json_lines.settled()
    assert line["problem"] == problem
    assert line["size"] == len(body)
    assert line["decision"] == "dead_letter"
    assert line["cause"] == "malformed"
    assert (line["message_id"], line["routing_key"], line["service"]) == (
        "m-1",
        "share.accepted",
        "probe",
    )
    assert PHI not in json.dumps(line)


async def test_an_envelope_that_is_not_a_cloudevent_is_malformed(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """JSON without a dedupe key and a type is dead-lettered; the line says which attribute."""
    probe = Probe()
    worker, _ = probe_worker(db, probe, settings_for(tmp_path))
    delivery = FakeDelivery(json.dumps({"specversion": "1.0", "id": PHI}).encode())
    await worker(delivery)
    assert delivery.cause is DeadLetterCause.MALFORMED
    (line,) = json_lines.settled()
    assert "source:missing" in line["problem"]
    assert PHI not in json.dumps(line)


async def test_processed_delivery_is_acked_with_one_line(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """A handled event: ack, and one line with the decision, type, attempt, size, content
    type (parameters allowed) and duration."""
    probe = Probe()
    worker, transport = probe_worker(db, probe, settings_for(tmp_path))
    event = accepted_event()
    delivery = FakeDelivery.of(event, content_type="application/json; charset=utf-8")
    await worker(delivery)

    assert delivery.settlement == "ack"
    assert [e["type"] for e in transport.events()] == ["share.completed"]
    (line,) = json_lines.settled()
    assert line["decision"] == "ack"
    assert line["outcome"] == "processed"
    assert line["event_type"] == "share.accepted"
    assert line["attempt"] == 1
    assert line["size"] == len(delivery.body)
    assert line["content_type"] == "application/json; charset=utf-8"
    assert line["duration_ms"] >= 0


async def test_attacker_chosen_ids_are_bounded_and_sanitised_in_the_line(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """A message id and routing key of any length and characters are logged cut to size,
    with control characters replaced."""
    probe = Probe()
    worker, _ = probe_worker(db, probe, settings_for(tmp_path))
    hostile = "evil\n\x1b[31m" + "x" * 5000
    await worker(FakeDelivery(b"{}", message_id=hostile, routing_key=hostile))
    (line,) = json_lines.settled()
    for field in ("message_id", "routing_key"):
        assert len(line[field]) <= 129
        assert "\n" not in line[field]
        assert "\x1b" not in line[field]


async def test_duplicate_is_acked_without_a_second_effect(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """The same event twice: two acks, one handler run, one line each."""
    probe = Probe()
    worker, _ = probe_worker(db, probe, settings_for(tmp_path))
    first, again = FakeDelivery.of(accepted_event()), FakeDelivery.of(accepted_event())
    await worker(first)
    await worker(again)
    assert (first.settlement, again.settlement) == ("ack", "ack")
    assert probe.calls == 1
    lines = json_lines.read()
    assert [line["outcome"] for line in lines] == ["processed", "duplicate"]


async def test_an_event_type_without_a_handler_is_acked_as_ignored(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """A trusted event the service does not handle is acknowledged, once, as ignored."""
    probe = Probe()
    worker, _ = probe_worker(db, probe, settings_for(tmp_path))
    event = accepted_event().model_copy(update={"type": "share.failed"})
    delivery = FakeDelivery.of(event)
    await worker(delivery)
    assert delivery.settlement == "ack"
    assert json_lines.settled()[0]["outcome"] == "ignored"


async def test_data_breaking_its_contract_is_dead_lettered_contract(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """An internal event whose data breaks the contract: dead letter (contract), no effect."""
    probe = Probe()
    worker, _ = probe_worker(db, probe, settings_for(tmp_path))
    document = json.loads(accepted_event().model_dump_json())
    document["data"]["share_id"] = "not-a-share"
    delivery = FakeDelivery(json.dumps(document).encode(), producer="blume-share")
    await worker(delivery)
    assert delivery.cause is DeadLetterCause.CONTRACT
    assert probe.calls == 0
    assert json_lines.settled()[0]["problem"] == "share_id:string_pattern_mismatch"


async def test_a_permanent_error_is_dead_lettered_at_once(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """A handler's PermanentError is not retried: dead letter (contract), its effect undone."""
    probe = Probe()
    probe.behaviour = lambda: (_ for _ in ()).throw(PermanentError("never"))
    worker, transport = probe_worker(db, probe, settings_for(tmp_path))
    delivery = FakeDelivery.of(accepted_event())
    await worker(delivery)
    assert delivery.cause is DeadLetterCause.CONTRACT
    assert transport.published == []
    assert json_lines.settled()[0]["cause"] == "contract"


def fail_with(error: Exception) -> Any:
    def behaviour() -> None:
        raise error

    return behaviour


async def test_transient_failure_is_retried_and_announced_once_per_class(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """A transient failure is retried with its class and a delay within the first ceiling;
    the service hears of the first retry of each class only."""
    probe = Probe()
    probe.behaviour = fail_with(TransientError("smtp_unavailable"))
    settings = settings_for(tmp_path, retry_delay_seconds=2.0)
    worker, transport = probe_worker(db, probe, settings, clock=lambda: NOW)
    first = FakeDelivery.of(accepted_event())
    await worker(first)
    assert (first.settlement, first.error_class) == ("retry", "smtp_unavailable")
    assert first.retry_delay is not None
    assert 0 <= first.retry_delay <= 2.0
    assert [(n.error_class, n.first_failed_at) for n in probe.notices] == [
        ("smtp_unavailable", NOW)
    ]
    assert transport.published == []  # the failed attempt's events were rolled back

    same_class = {"x-blume-error-class": "smtp_unavailable"}
    await worker(
        FakeDelivery.of(accepted_event(), attempt=2, first_failed_at=NOW, headers=same_class)
    )
    assert len(probe.notices) == 1
    probe.behaviour = fail_with(TransientError("database_unavailable"))
    await worker(
        FakeDelivery.of(accepted_event(), attempt=3, first_failed_at=NOW, headers=same_class)
    )
    assert [n.error_class for n in probe.notices] == ["smtp_unavailable", "database_unavailable"]
    lines = json_lines.read()
    assert [line["decision"] for line in lines] == ["retry", "retry", "retry"]
    assert [line.get("retry_notice") for line in lines] == ["recorded", None, "recorded"]


async def test_an_unclassified_error_is_a_bug_with_an_attempt_budget_and_a_traceback(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """An exception nobody classified is ``unexpected``: retried until BLUME_MAX_ATTEMPTS,
    then dead-lettered (exhausted); the line carries the traceback as one JSON field."""
    probe = Probe()
    probe.behaviour = fail_with(ValueError("bug"))
    worker, _ = probe_worker(db, probe, settings_for(tmp_path, max_attempts=3))
    early = FakeDelivery.of(accepted_event(), attempt=2)
    last = FakeDelivery.of(accepted_event(), attempt=3)
    await worker(early)
    await worker(last)
    assert (early.settlement, early.error_class) == ("retry", "unexpected")
    assert (last.cause, last.error_class) == (DeadLetterCause.EXHAUSTED, "unexpected")
    lines = json_lines.read()
    assert lines[1]["budget"] == "attempts"
    assert "Traceback" in lines[1]["exception"]
    assert "ValueError: bug" in lines[1]["exception"]


async def test_past_its_budget_the_service_may_answer_instead_of_a_dead_letter(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """When the budget ends, an ``on_exhausted`` hook that answers gets the message acked and
    recorded as processed (a redelivery is a duplicate); one that declines leaves a dead
    letter and no inbox row."""
    probe = Probe()
    probe.behaviour = fail_with(TransientError("smtp_unavailable"))
    worker, _ = probe_worker(db, probe, settings_for(tmp_path), clock=lambda: NOW)
    past = NOW - timedelta(hours=25)
    declined = FakeDelivery.of(accepted_event(), first_failed_at=past)
    await worker(declined)
    assert declined.cause is DeadLetterCause.EXHAUSTED
    probe.exhausted_answer = True
    answered = FakeDelivery.of(accepted_event(), first_failed_at=past)
    await worker(answered)
    assert answered.settlement == "ack"
    again = FakeDelivery.of(accepted_event())
    await worker(again)
    assert probe.answered == ["exhausted:smtp_unavailable", "exhausted:smtp_unavailable"]
    lines = json_lines.read()
    assert [line.get("outcome") for line in lines] == [
        None,
        "answered_after_budget",
        "duplicate",
    ]


async def test_a_hanging_handler_is_cut_off_as_a_timeout(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """A handler running past BLUME_HANDLER_TIMEOUT_SECONDS is cancelled and retried with
    error class ``timeout``."""
    probe = Probe()
    probe.hang_seconds = 30
    worker, _ = probe_worker(db, probe, settings_for(tmp_path, handler_timeout_seconds=0.1))
    delivery = FakeDelivery.of(accepted_event())
    await asyncio.wait_for(worker(delivery), 10)
    assert (delivery.settlement, delivery.error_class) == ("retry", "timeout")
    assert json_lines.settled()[0]["error_class"] == "timeout"


async def test_a_failure_of_the_worker_itself_still_settles_the_delivery(
    db: Database, tmp_path: Path, json_lines: JsonLines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in the worker's own code (not a handler's) is settled too: retried as
    ``unexpected``, with one line that says so."""
    probe = Probe()
    worker, _ = probe_worker(db, probe, settings_for(tmp_path))

    def broken(*_args: Any) -> Any:
        raise RuntimeError("worker bug")

    monkeypatch.setattr(worker, "_producers", type("Broken", (), {"verdict": broken})())
    delivery = FakeDelivery.of(accepted_event())
    await worker(delivery)
    assert (delivery.settlement, delivery.error_class) == ("retry", "unexpected")
    (line,) = json_lines.settled()
    assert line["worker_error"] is True


class UnsettleableDelivery(FakeDelivery):
    async def ack(self) -> None:
        self.settle_error = ConnectionError("channel closed")
        raise self.settle_error


async def test_a_settlement_the_broker_refuses_is_one_line_too(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """If the ack itself fails (channel gone), the transport gives the message back for
    redelivery; that path writes one line, saying it was not settled, and nothing else."""
    probe = Probe()
    worker, _ = probe_worker(db, probe, settings_for(tmp_path))
    event = accepted_event()
    delivery = UnsettleableDelivery(event.model_dump_json().encode(), producer="blume-share")
    await deliver(worker, delivery, service="probe")
    (line,) = json_lines.read()
    assert line["event"] == "delivery could not be settled; the broker will redeliver it"
    assert line["settle_error"] == "ConnectionError"
    assert line["decision"] == "redeliver"
    assert not delivery.settled


async def test_a_request_with_a_broken_but_identifiable_envelope_is_answered(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """A study.send.requested whose tenantid is unusable goes to the service's answer, under
    the stand-in envelope: tenant ``_unknown``, its own correlation id kept."""
    probe = Probe()
    worker, _ = probe_worker(db, probe, settings_for(tmp_path))
    document = json.loads(accepted_event().model_dump_json())
    document.update(type="study.send.requested", tenantid="t" * 300)
    delivery = FakeDelivery(json.dumps(document).encode(), producer="omegaai")
    await worker(delivery)
    assert delivery.settlement == "ack"
    assert probe.answered == ["_unknown|corr-1"]
    (line,) = json_lines.settled()
    assert line["invalid_envelope"] == "tenantid:string_too_long"
