"""The corpus through the real pipeline: the dispatcher's and the audit sink's ``Worker``.

No broker: each case is handed over as the transport would (raw bytes and AMQP properties,
``FakeDelivery``), on SQLite and on PostgreSQL. Each delivery must be settled exactly once,
as its case says, without raising, with exactly one "delivery settled" JSON line that holds
neither the body nor PHI.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from blume_audit_sink.models import AuditPending, AuditRecord
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import ShareRejected
from sqlmodel import col, select

from tests.bad_input.corpus import RECORDED, UNTRUSTED, Case, build_corpus
from tests.bad_input.harness import WorkerUnderTest, outcome_of, problems_with_logs
from tests.bad_input.messages import PHI_VALUES

pytestmark = pytest.mark.asyncio(loop_scope="module")

CORPUS = build_corpus()
AT_DISPATCHER = [case for case in CORPUS if "share_dispatcher" in case.receivers]
ANSWERED = [case for case in AT_DISPATCHER if all(o.kind == "rejected" for o in case.expect)]


def _name(case: Case) -> str:
    return case.name


def _secrets(case: Case) -> list[str]:
    return [*PHI_VALUES, *([case.bad_value] if case.bad_value else [])]


def _owed(case: Case, service: str) -> set[str]:
    return {str(outcome) for outcome in case.expected_at(service)}


@pytest.mark.parametrize("case", AT_DISPATCHER, ids=_name)
async def test_dispatcher_settles_each_case_as_owed(
    dispatcher: WorkerUnderTest, case: Case
) -> None:
    """The dispatcher settles the case once, raising nothing: it answers it with the owed
    reason code (and publishes nothing else) or dead-letters it with the owed cause."""
    outcome = outcome_of(await dispatcher.observe(case))
    assert outcome in _owed(case, "share_dispatcher")


@pytest.mark.parametrize("case", ANSWERED, ids=_name)
async def test_dispatcher_answer_is_valid_and_echoes_nothing(
    dispatcher: WorkerUnderTest, case: Case
) -> None:
    """The one share.rejected is a strictly valid CloudEvent of the contract, carries the
    request's correlation id when it had a usable one, and never echoes the bad value."""
    observed = await dispatcher.observe(case)
    [rejection] = observed.of_type("share.rejected")
    event = CloudEvent[ShareRejected].model_validate(rejection)
    if case.correlation_id is not None:
        assert event.correlationid == case.correlation_id
    if case.bad_value:
        assert case.bad_value not in event.data.message
        assert case.bad_value not in json.dumps(rejection)


@pytest.mark.parametrize("case", AT_DISPATCHER, ids=_name)
async def test_dispatcher_logs_one_settled_line_without_body_or_phi(
    dispatcher: WorkerUnderTest, case: Case
) -> None:
    """Exactly one "delivery settled" JSON line names the decision (and cause); no line
    holds the body, a PHI value of the examples or the case's bad value."""
    problems = problems_with_logs(await dispatcher.observe(case), _secrets(case))
    assert problems == []


async def _recorded_types(audit_sink: WorkerUnderTest, event_id: str) -> list[str]:
    """The types the audit store holds the event id under, staged or already sealed (the
    sealer starts with the first staged event and chains them in the background)."""
    async with audit_sink.db.transaction() as session:
        staged = await session.exec(
            select(AuditPending.entry).where(col(AuditPending.event_id) == event_id)
        )
        sealed = await session.exec(
            select(AuditRecord.event_type).where(col(AuditRecord.event_id) == event_id)
        )
        return [json.loads(entry)["event_type"] for entry in staged.all()] + list(sealed.all())


def _claimed(case: Case) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(case.body)
    return document


@pytest.mark.parametrize("case", CORPUS, ids=_name)
async def test_audit_sink_settles_each_case_as_owed(
    audit_sink: WorkerUnderTest, case: Case
) -> None:
    """The audit sink settles the case once, raising nothing and publishing nothing: it
    records what it can read, and dead-letters the unreadable and the forged."""
    observed = await audit_sink.observe(case)
    outcome = outcome_of(observed)
    if outcome == "acknowledged":
        outcome = str(RECORDED)
    assert outcome in _owed(case, "audit_sink")
    published = [event.get("type") for event in observed.published]
    assert published == []


RECORDED_ONLY = [case for case in CORPUS if case.audit == {RECORDED}]
FORGED = [case for case in CORPUS if case.audit == {UNTRUSTED}]


@pytest.mark.parametrize("case", RECORDED_ONLY, ids=_name)
async def test_audit_sink_records_a_readable_case_once(
    audit_sink: WorkerUnderTest, case: Case
) -> None:
    """A readable event is staged for its chain exactly once, as the type it claims."""
    await audit_sink.observe(case)
    claimed = _claimed(case)
    assert await _recorded_types(audit_sink, claimed["id"]) == [claimed["type"]]


@pytest.mark.parametrize("case", FORGED, ids=_name)
async def test_audit_sink_never_records_a_forgery_as_genuine(
    audit_sink: WorkerUnderTest, case: Case
) -> None:
    """An event from a publisher that is not its producer is not staged as the type it
    claims to be (a security record of it may exist, under a type of its own)."""
    await audit_sink.observe(case)
    claimed = _claimed(case)
    assert claimed["type"] not in await _recorded_types(audit_sink, claimed["id"])


@pytest.mark.parametrize("case", CORPUS, ids=_name)
async def test_audit_sink_logs_one_settled_line_without_body_or_phi(
    audit_sink: WorkerUnderTest, case: Case
) -> None:
    """Exactly one "delivery settled" JSON line per case at the audit sink, holding neither
    the body nor PHI."""
    problems = problems_with_logs(await audit_sink.observe(case), _secrets(case))
    assert problems == []
