"""Reading what arrives on the wire: the producer rule, hostile headers, delay tiers, decoding."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from blume_contracts.envelope import now
from blume_contracts.events import ShareAccepted
from blume_runtime import amqp_decoding, wire
from blume_runtime.broker_users import (
    BrokerUsers,
    BrokerUsersError,
    amqp_user,
    parse_broker_users,
    service_names,
)
from blume_runtime.settings import Settings
from blume_runtime.topology import QueueSpec, delay_tiers, tier_for
from blume_runtime.transport import DeadLetterCause, Delivery, InMemoryTransport, OutgoingMessage
from hypothesis import given
from hypothesis import strategies as st
from pamqp import decode
from pydantic import ValidationError

OWN, OPS_USER, STRANGER = "notifier-user", "ops-user", "someone"
TRUSTED = frozenset({OWN, OPS_USER})

header_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary()
    | st.datetimes(timezones=st.none() | st.just(UTC)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
wire_headers = st.dictionaries(
    st.sampled_from(sorted(wire.OURS)) | st.text(max_size=8), header_values, max_size=12
)


@given(
    user_id=st.none() | st.sampled_from([OWN, OPS_USER, STRANGER]) | st.text(),
    headers=st.none() | wire_headers,
    routing_key=st.text(max_size=300),
)
def test_reading_any_headers_never_raises(
    user_id: str | None, headers: dict[str, Any] | None, routing_key: str
) -> None:
    """Whatever a publisher puts in its headers, the facts read from them are well formed."""
    facts = wire.read_facts(user_id, headers, routing_key, trusted_users=TRUSTED)
    assert 1 <= facts.attempt <= wire.MAX_ATTEMPT
    assert facts.producer is None or isinstance(facts.producer, str)
    if facts.trusted:
        assert user_id in TRUSTED
    else:
        assert (facts.attempt, facts.event_type, facts.first_failed_at) == (1, routing_key, None)
        assert facts.producer == wire.text(user_id)
    for moment in (facts.first_failed_at, facts.last_failed_at, facts.due_at):
        assert moment is None or moment.tzinfo is UTC
    wire.broker_death(headers)
    assert all(wire.portable(value) for value in wire.foreign_headers(headers).values())


@pytest.mark.parametrize(
    ("user_id", "headers", "producer", "trusted"),
    [
        (None, {wire.PRODUCER: "share_dispatcher-user"}, None, False),
        (STRANGER, {}, STRANGER, False),
        (STRANGER, {wire.PRODUCER: "share_dispatcher-user"}, STRANGER, False),
        (OWN, {}, OWN, False),
        (OWN, {wire.PRODUCER: "upstream-client"}, "upstream-client", True),
        (OPS_USER, {wire.PRODUCER: "upstream-client"}, "upstream-client", True),
        (OPS_USER, {wire.PRODUCER: ""}, None, True),
        (OWN, {wire.PRODUCER: 42}, OWN, False),
    ],
    ids=[
        "anonymous",
        "direct",
        "forged-by-a-stranger",
        "own-fresh-publish",
        "own-retry",
        "replay",
        "replay-of-an-anonymous-message",
        "malformed-producer-header",
    ],
)
def test_the_producer_rule(
    user_id: str | None, headers: dict[str, Any], producer: str | None, trusted: bool
) -> None:
    """The header names the producer only when the service itself or ops put it there."""
    facts = wire.read_facts(user_id, headers, "share.accepted", trusted_users=TRUSTED)
    assert (facts.producer, facts.trusted) == (producer, trusted)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3),
        ("7", 7),
        (b"7", 7),
        (2.0, 2),
        (Decimal(4), 4),
        (0, None),
        (-5, None),
        ("-5", None),
        ("3.5", None),
        (2.5, None),
        (math.inf, None),
        (Decimal("NaN"), None),
        (Decimal("sNaN"), None),
        (Decimal("1E+999999999"), wire.MAX_ATTEMPT),
        (10**30, wire.MAX_ATTEMPT),
        ("99999999999999999999", None),
        (True, None),
        ([3], None),
        (None, None),
    ],
)
def test_attempt_numbers_are_parsed_defensively(value: Any, expected: int | None) -> None:
    """Strings, negatives, fractions, huge numbers and wrong types never crash the reader."""
    assert wire.attempt_number(value) == expected


@pytest.mark.parametrize(
    "value",
    ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2026-11-20T10:00:00", "x", 7],
)
def test_impossible_or_naive_times_read_as_unknown(value: Any) -> None:
    """A time past the calendar's ends, without a zone, or not a time at all is None."""
    assert wire.timestamp(value) is None


@given(st.floats(min_value=0, max_value=4000, allow_nan=False))
def test_a_tier_never_waits_longer_than_asked_nor_under_half(delay: float) -> None:
    """For delays of 1 s or more the chosen tier t satisfies d/2 < t <= d; shorter ones wait
    the shortest tier, 1 s."""
    tiers = delay_tiers(4096)
    tier = tier_for(delay, tiers)
    if delay >= 1:
        assert delay / 2 < tier <= delay
    else:
        assert tier == 1


def test_tiers_reach_the_longest_delay_without_passing_it() -> None:
    """The default 300 s cap needs nine queues per service, up to 256 s."""
    assert delay_tiers(300) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert delay_tiers(256) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert delay_tiers(1) == (1,)
    assert delay_tiers(0.5) == (1,)


def test_out_of_range_timestamps_and_non_utf8_short_strings_decode() -> None:
    """The frame decoder keeps what pamqp would refuse (and drop the connection over)."""
    amqp_decoding.install()
    far = struct.pack(">Q", 2**62)
    assert decode.by_type(far, "timestamp") == (8, 2**62)
    assert decode.embedded_value(b"T" + far) == (9, 2**62)
    assert decode.by_type(b"\x03a\xffb", "shortstr") == (4, "a\\xffb")
    assert decode.by_type(struct.pack(">Q", 1_700_000_000), "timestamp")[1] == datetime(
        2023, 11, 14, 22, 13, 20, tzinfo=UTC
    )


def test_broker_users_map_services_to_users_and_back() -> None:
    """Given BLUME_BROKER_USERS, each service has its user; a user stands for its services."""
    names = sorted(service_names())
    text = ",".join(f"{name}={'shared' if name != 'ops' else 'ops-user'}" for name in names)
    users = BrokerUsers("shared", parse_broker_users(text))
    assert users.user_of("notifier") == "shared"
    assert {name for name in names if users.user_of(name) == "ops-user"} == {"ops"}
    assert users.trusted_for("notifier") == {"shared", "ops-user"}
    assert users.misassigned(["notifier", "ops"]) == ["ops"]


def test_single_user_mode_gives_every_service_the_connection_user() -> None:
    """Unset, every service and ops are the user of BLUME_AMQP_URL."""
    settings = Settings(amqp_url="amqp://svc%40blume:secret@rabbit/blume")
    users = settings.broker_user_map
    assert users.single_user
    assert users.connection_user == "svc@blume"
    assert users.user_of("audit_sink") == users.user_of("ops") == "svc@blume"
    assert {users.user_of(name) for name in service_names()} == {"svc@blume"}
    assert amqp_user("amqp://rabbit/") == "guest"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("notifier", "expected service=user"),
        ("fax_sender=x", "unknown service"),
        ("notifier=a,notifier=b", "given twice"),
        ("notifier=a", "no broker user for"),
    ],
)
def test_a_broken_broker_user_map_is_refused(text: str, problem: str) -> None:
    """A typo or an omission is a configuration error, not a silently untrusted service."""
    with pytest.raises(BrokerUsersError, match=problem):
        parse_broker_users(text)
    with pytest.raises(ValidationError):
        Settings(broker_users=text)


def accepted_message() -> OutgoingMessage:
    data = ShareAccepted(share_id="shr_" + "a" * 32, method="external_link", expires_at=now())
    return OutgoingMessage("share.accepted", data.model_dump_json().encode(), "evt-1")


async def test_the_embedded_broker_applies_the_producer_rule() -> None:
    """In memory too: a service publishes as the service user, ``publish_as`` as a client,
    a retry keeps the original producer, and a forged header from a client is ignored."""
    transport = InMemoryTransport()
    seen: list[tuple[str | None, int, str]] = []

    async def consumer(delivery: Delivery) -> None:
        seen.append((delivery.producer, delivery.attempt, delivery.routing_key))
        if delivery.attempt == 1 and delivery.producer == "omegaai":
            await delivery.retry_later(0.01, error_class="database")
        else:
            await delivery.ack()

    transport.subscribe(QueueSpec("probe", ("share.accepted",)), consumer)
    await transport.start()
    try:
        await transport.publish(accepted_message())
        await transport.publish_as("omegaai", accepted_message())
        forged = accepted_message()
        forged.headers.update({wire.PRODUCER: "blume-share", wire.ATTEMPT: 9})
        await transport.publish_as("mallory", forged)
        await transport.publish_as(None, accepted_message())
        await transport.wait_idle()
    finally:
        await transport.stop()
    assert sorted(seen, key=str) == sorted(
        [
            ("blume-share", 1, "share.accepted"),
            ("omegaai", 1, "share.accepted"),
            ("omegaai", 2, "share.accepted"),
            ("mallory", 1, "share.accepted"),
            (None, 1, "share.accepted"),
        ],
        key=str,
    )


async def test_the_embedded_broker_settles_what_a_consumer_drops() -> None:
    """A consumer that raises has its delivery dead-lettered as malformed, and the queue
    goes on to the next message."""
    transport = InMemoryTransport()
    handled: list[str] = []

    async def consumer(delivery: Delivery) -> None:
        if delivery.message_id == "bomb":
            raise RuntimeError("boom")
        handled.append(delivery.message_id or "")
        await delivery.ack()

    spec = QueueSpec("probe", ("share.accepted",))
    transport.subscribe(spec, consumer)
    await transport.start()
    try:
        await transport.publish(OutgoingMessage("share.accepted", b"{}", "bomb"))
        await transport.publish(OutgoingMessage("share.accepted", b"{}", "next"))
        await transport.wait_idle()
    finally:
        await transport.stop()
    assert handled == ["next"]
    [dead] = transport.dead_letters[spec.dead_letter_queue]
    assert dead.headers[wire.DEAD_LETTER_CAUSE] == DeadLetterCause.MALFORMED.value
