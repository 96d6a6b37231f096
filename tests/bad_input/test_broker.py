"""No hostile message stalls a queue: the real ``blume-share run`` on RabbitMQ, PostgreSQL
and aiosmtpd, fed by pika (an independent client).

Defect 1 exactly as reported, then the whole corpus in one go; after each, a valid request
completes, every case is accounted for (answers by reason, dead letters by cause) and no
queue holds an unacknowledged message.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pika
import pytest
from blume_contracts.envelope import RawEvent
from blume_contracts.ids import share_id_for
from pika.adapters.blocking_connection import BlockingChannel

from tests.bad_input.corpus import AUDIT_SINK, RECORDED, SERVICES, Case, Producer, build_corpus
from tests.bad_input.publish import (
    DeadLetter,
    Publisher,
    drain_dead_letters,
    publish_case,
    queue_counts,
)
from tests.conftest import RunningSystem, request_event, share_emails

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SETTLE_SECONDS = 30.0


def _vhost(amqp_url: str) -> str:
    return unquote(urlsplit(amqp_url).path[1:])


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def intruder_url(amqp_url: str) -> Iterator[str]:
    """A broker user with every right on the test vhost and no service behind it."""
    user, password = f"blume-intruder-{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
    _rabbitmqctl("add_user", user, password)
    try:
        _rabbitmqctl("set_permissions", "-p", _vhost(amqp_url), user, ".*", ".*", ".*")
        parts = urlsplit(amqp_url)
        netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port or 5672}"
        yield urlunsplit(parts._replace(netloc=netloc))
    finally:
        _rabbitmqctl("delete_user", user)


class Outside:
    """pika connections as upstream (no user_id), as our services' user, as an intruder,
    and a queue observing the answers (share.rejected, share.completed)."""

    def __init__(self, amqp_url: str, intruder_url: str) -> None:
        self._own = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self._intruder = pika.BlockingConnection(pika.URLParameters(intruder_url))
        own, intruder = self._own.channel(), self._intruder.channel()
        for channel in (own, intruder):
            channel.confirm_delivery()
        self.publishers = {
            Producer.ANONYMOUS: Publisher(own, None),
            Producer.SERVICE: Publisher(own, urlsplit(amqp_url).username),
            Producer.STRANGER: Publisher(intruder, urlsplit(intruder_url).username),
        }
        self.channel: BlockingChannel = self._own.channel()
        self._answers = self.channel.queue_declare("", exclusive=True).method.queue
        for key in ("share.rejected", "share.completed"):
            self.channel.queue_bind(self._answers, "blume.share", routing_key=key)
        self.answers: list[dict[str, Any]] = []
        self.dead_letters: list[DeadLetter] = []

    def collect(self) -> None:
        while True:
            method, _, body = self.channel.basic_get(self._answers, auto_ack=True)
            if method is None:
                break
            self.answers.append(json.loads(body))
        for service in SERVICES:
            self.dead_letters += drain_dead_letters(self.channel, service)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.answers if event["type"] == event_type]

    def close(self) -> None:
        self._own.close()
        self._intruder.close()


@pytest.fixture
def outside(amqp_url: str, intruder_url: str, system: RunningSystem) -> Iterator[Outside]:
    """Publishers and observers, once the workers have declared their topology."""
    observer = Outside(amqp_url, intruder_url)
    yield observer
    observer.close()


async def _valid_request_completes(system: RunningSystem, outside: Outside, amqp_url: str) -> None:
    request = request_event()
    system.publish(request)
    deadline = time.monotonic() + SETTLE_SECONDS
    while not any(
        event["correlationid"] == request["correlationid"]
        for event in outside.of_type("share.completed")
    ):
        if time.monotonic() > deadline:
            stuck = "\n".join(_unsettled(amqp_url))
            pytest.fail(
                f"a valid request did not complete; queues:\n{stuck}\nlogs:\n"
                + system.logs()[-2000:]
            )
        await asyncio.sleep(0.2)
        outside.collect()


async def _drained(amqp_url: str) -> list[str]:
    """``_unsettled`` once the workers have worked off what is queued (a busy machine is
    slow, a stalled worker never drains): what is still unsettled at the deadline."""
    deadline = time.monotonic() + SETTLE_SECONDS
    unsettled = _unsettled(amqp_url)
    while unsettled and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        unsettled = _unsettled(amqp_url)
    return unsettled


def _unsettled(amqp_url: str) -> list[str]:
    """Queues holding unacknowledged messages, and service queues still holding any."""
    return [
        f"{q.name}: {q.ready} ready, {q.unacknowledged} unacknowledged"
        for q in queue_counts(_vhost(amqp_url))
        if q.unacknowledged or (q.ready and q.name in {f"blume.share.{s}" for s in SERVICES})
    ]


async def test_broken_json_labelled_json_stalls_no_worker(
    system: RunningSystem, outside: Outside, amqp_url: str
) -> None:
    """Defect 1 as reported: 24 broken-JSON bodies as application/json on
    study.send.requested, then a valid request. It completes; the dispatcher and the audit
    sink each dead-letter every broken body once (cause malformed); nothing is left
    unacknowledged on any queue."""
    broken = [
        case
        for tag in ("d1a", "d1b", "d1c", "d1d")
        for case in build_corpus(tag)
        if case.name.startswith("broken-json-")
    ]
    for case in broken:
        publish_case(outside.publishers, case)
    await _valid_request_completes(system, outside, amqp_url)
    bodies = Counter(case.body for case in broken)
    deadline = time.monotonic() + SETTLE_SECONDS
    while len(outside.dead_letters) < 2 * len(broken) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        outside.collect()
    for service in ("share_dispatcher", AUDIT_SINK):
        letters = [letter for letter in outside.dead_letters if letter.service == service]
        assert Counter(letter.body for letter in letters) == bodies, service
        assert {letter.cause for letter in letters} == {"malformed"}, service
    assert await _drained(amqp_url) == []


def _owed(case: Case, service: str, outside: Outside) -> str | None:
    """Why the case is not yet accounted for at ``service`` (None once it is)."""
    letters = [
        f"dead_lettered({letter.cause})"
        for letter in outside.dead_letters
        if letter.service == service and letter.body == case.body
    ]
    answered = _answers_to(case, outside) if service == "share_dispatcher" else []
    answers = [f"rejected({event['data']['reason']})" for event in answered]
    outcomes = letters + answers
    owed = {str(outcome) for outcome in case.expected_at(service)}
    if service == AUDIT_SINK and RECORDED in case.audit:
        owed.add("nothing")  # recorded: neither answered nor dead-lettered
        outcomes = outcomes or ["nothing"]
    if len(outcomes) == 1 and outcomes[0] in owed:
        return None
    return f"{case.name} at {service}: {outcomes or 'nothing yet'}, owed {sorted(owed)}"


def _summary(problems: list[str]) -> str:
    """The problems grouped by what happened instead of what was owed, with example cases."""
    groups: dict[str, list[str]] = {}
    for problem in problems:
        name, _, rest = problem.partition(" at ")
        groups.setdefault(rest, []).append(name)
    return "\n".join(
        f"{len(names):3} x {rest}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
        for rest, names in sorted(groups.items(), key=lambda item: -len(item[1]))
    )


def _answers_to(case: Case, outside: Outside) -> list[dict[str, Any]]:
    """The share.rejected events for a case that may be answered, found by its share id
    (derived from the request's dedupe key, which a lenient envelope keeps)."""
    if not any(outcome.kind == "rejected" for outcome in case.expect):
        return []
    document = json.loads(case.body.removeprefix(b"\xef\xbb\xbf"))
    key = RawEvent.model_construct(source=document["source"], id=document["id"])
    share_id = share_id_for(key)
    return [e for e in outside.of_type("share.rejected") if e["data"]["share_id"] == share_id]


async def test_whole_corpus_in_one_go_is_accounted_for_and_stalls_nothing(
    system: RunningSystem, outside: Outside, amqp_url: str, smtp_server: Any
) -> None:
    """Every corpus case published at once, forgeries from no user and from an intruder
    user: a valid request still completes with one email (no forged event sends one);
    each case ends, at every worker it reaches, in exactly the outcome it is owed; no
    other answer appears; nothing is left unacknowledged."""
    corpus = build_corpus("all")
    for case in corpus:
        publish_case(outside.publishers, case)
    await _valid_request_completes(system, outside, amqp_url)
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        outside.collect()
        missing = [
            problem
            for case in corpus
            for service in case.receivers
            if (problem := _owed(case, service, outside))
        ]
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert missing == [], _summary(missing)
    matched = sum(len(_answers_to(case, outside)) for case in corpus)
    assert len(outside.of_type("share.rejected")) == matched, "an answer to no case"
    # One share email; a rejected request's sender may be told, which is not a share email.
    assert len(share_emails(smtp_server.messages)) == 1
    assert await _drained(amqp_url) == []
