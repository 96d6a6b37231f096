"""The producer verdict: who may make us act on which event type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from blume_contracts.registry import EVENTS
from blume_runtime.broker_users import BrokerUsers
from blume_runtime.db import Database
from blume_runtime.identity import EMBEDDED_BROKER_USER, ProducerRule, Refusal
from blume_runtime.service import RefusedEvent
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeDelivery
from blume_runtime.transport import DeadLetterCause
from pydantic import SecretStr
from sqlmodel.ext.asyncio.session import AsyncSession

from runtime.tests.pipeline_support import (
    JsonLines,
    Probe,
    accepted_event,
    probe_worker,
    settings_for,
)

USERS = {
    "share_dispatcher": "svc-dispatcher",
    "blume_publisher": "svc-publisher",
    "notifier": "svc-notifier",
    "link_issuer": "svc-links",
    "access_gateway": "svc-gateway",
    "ops": "svc-ops",
}
RULE = ProducerRule(BrokerUsers("svc-dispatcher", USERS))


def test_outside_types_are_marked_in_the_registry() -> None:
    """Only the two upstream request types come from outside publishers."""
    outside = sorted(name for name, spec in EVENTS.items() if spec.outside)
    assert outside == ["share.revoke.requested", "study.send.requested"]


@pytest.mark.parametrize("producer", ["omegaai", "svc-notifier", "anyone", None])
def test_outside_types_are_accepted_from_any_publisher(producer: str | None) -> None:
    """A request is trusted whoever sent it; the verified sender is its requester."""
    verdict = RULE.verdict("study.send.requested", producer)
    assert verdict.trusted
    assert verdict.requester == producer


def test_an_internal_type_is_trusted_only_from_its_producers_user() -> None:
    """share.blume.published: the publisher's user only; the upstream client, another
    service, an unknown user or no verified user at all are refused."""
    rule = RULE
    assert rule.verdict("share.blume.published", "svc-publisher").trusted
    assert rule.verdict("share.blume.published", "svc-publisher").requester is None
    assert rule.verdict("share.blume.published", "omegaai").refusal is Refusal.NOT_ITS_PRODUCER
    assert rule.verdict("share.blume.published", "svc-notifier").refusal is (
        Refusal.NOT_ITS_PRODUCER
    )
    assert rule.verdict("share.blume.published", None).refusal is Refusal.NO_PRODUCER


def test_every_internal_type_names_a_producer_whose_user_is_trusted() -> None:
    """For each non-outside type in the registry, its producers' users pass and others fail."""
    rule = RULE
    for name, spec in EVENTS.items():
        if spec.outside:
            continue
        for producer in spec.producers:
            assert rule.verdict(name, USERS[producer]).trusted, (name, producer)
        strangers = set(USERS.values()) - {USERS[p] for p in spec.producers}
        for stranger in strangers:
            assert not rule.verdict(name, stranger).trusted, (name, stranger)


def test_a_type_the_registry_does_not_know_is_refused() -> None:
    """No registry entry, no producer to match: refused, even from a service user."""
    verdict = RULE.verdict("share.made.up", "svc-dispatcher")
    assert verdict.refusal is Refusal.UNKNOWN_TYPE


def test_single_user_mode_maps_every_service_to_the_url_user() -> None:
    """Without BLUME_BROKER_USERS every service (and ops) is the user of BLUME_AMQP_URL."""
    settings = Settings(amqp_url=SecretStr("amqp://blume%2Dsvc:secret@rabbit:5672/prod"))
    users = settings.broker_user_map
    assert users.single_user
    for service in [*USERS, "audit_sink"]:
        assert users.user_of(service) == "blume-svc"


@pytest.mark.parametrize("producer", [None, "omegaai", "mallory"])
def test_single_user_mode_still_refuses_other_users_and_unverified_messages(
    producer: str | None,
) -> None:
    """One user for every service (quick start, tests) cannot tell services apart, but still
    refuses a message with no verified user or from any other user."""
    rule = ProducerRule.from_settings(Settings(amqp_url=SecretStr("amqp://guest:guest@h/")))
    assert rule.verdict("share.link.issued", "guest").trusted
    assert not rule.verdict("share.link.issued", producer).trusted


def test_the_embedded_default_has_one_identity_of_its_own() -> None:
    """No broker URL: every service is the in-memory broker's one user."""
    users = Settings().broker_user_map
    assert {users.user_of(service) for service in USERS} == {EMBEDDED_BROKER_USER}


class Recorder:
    def __init__(self) -> None:
        self.refused: list[RefusedEvent] = []

    async def __call__(self, refused: RefusedEvent, _session: AsyncSession) -> None:
        self.refused.append(refused)


async def test_a_forged_internal_event_has_no_effect_is_dead_lettered_and_reported(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """From the wrong user: no handler run, dead letter ``untrusted_producer``, the service's
    hook gets the claims and the publisher, and one line says why."""
    probe = Probe()
    recorder = Recorder()
    probe.service.on_untrusted(recorder)
    worker, transport = probe_worker(db, probe, settings_for(tmp_path))
    delivery = FakeDelivery.of(accepted_event(tenantid="victim-hospital"), producer="mallory")
    await worker(delivery)

    assert (delivery.settlement, delivery.cause) == (
        "dead_letter",
        DeadLetterCause.UNTRUSTED_PRODUCER,
    )
    assert probe.calls == 0
    assert transport.published == []
    [refused] = recorder.refused
    assert (refused.event_type, refused.event_id, refused.source) == (
        "share.accepted",
        "evt-1",
        "/blume-share/share_dispatcher",
    )
    assert (refused.tenantid, refused.producer) == ("victim-hospital", "mallory")
    (line,) = json_lines.settled()
    assert (line["cause"], line["refusal"], line["producer"]) == (
        "untrusted_producer",
        "not_a_producer_of_this_type",
        "mallory",
    )


async def test_a_forged_event_does_not_block_the_genuine_one_with_its_id(
    db: Database, tmp_path: Path
) -> None:
    """A refused event claims no inbox row: the genuine event of the same id still runs."""
    probe = Probe()
    worker, _ = probe_worker(db, probe, settings_for(tmp_path))
    await worker(FakeDelivery.of(accepted_event(), producer=None))
    genuine = FakeDelivery.of(accepted_event())
    await worker(genuine)
    assert genuine.settlement == "ack"
    assert probe.calls == 1


async def test_retried_and_replayed_messages_are_judged_by_their_original_producer(
    db: Database, tmp_path: Path
) -> None:
    """The verdict is on ``Delivery.producer``, which the transport keeps across retries and
    replays: a retried genuine event is still trusted on its third attempt, and a replayed
    forged one is still refused."""
    probe = Probe()
    worker, _ = probe_worker(db, probe, settings_for(tmp_path))
    forged = FakeDelivery.of(accepted_event("evt-9"), producer="mallory", attempt=1)
    await worker(forged)
    replayed = FakeDelivery.of(accepted_event("evt-9"), producer="mallory", attempt=1)
    await worker(replayed)
    retried = FakeDelivery.of(accepted_event("evt-10"), attempt=3)
    await worker(retried)
    assert [forged.cause, replayed.cause] == [DeadLetterCause.UNTRUSTED_PRODUCER] * 2
    assert retried.settlement == "ack"
    assert probe.calls == 1


async def test_a_failing_security_hook_retries_rather_than_losing_the_record(
    db: Database, tmp_path: Path
) -> None:
    """If the security record cannot be written (database down), the refused message is
    retried, so it is recorded once the database is back; still no handler effect."""
    probe = Probe()

    async def unavailable(_refused: RefusedEvent, _session: AsyncSession) -> None:
        raise TimeoutError

    probe.service.on_untrusted(unavailable)
    worker, _ = probe_worker(db, probe, settings_for(tmp_path))
    delivery = FakeDelivery(json.dumps(json.loads(accepted_event().model_dump_json())).encode())
    await worker(delivery)
    assert (delivery.settlement, delivery.error_class) == ("retry", "timeout")
    assert probe.calls == 0
