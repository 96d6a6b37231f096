"""Dead-letter queues on a real broker: listed without bodies, replayed onto the service."""

from __future__ import annotations

import pytest
from blume_runtime.dead_letters import list_dead_letters, replay
from blume_runtime.topology import QueueSpec
from blume_runtime.transport import OutgoingMessage

from runtime.tests.rabbit_support import collect

pytestmark = pytest.mark.integration

SPEC = QueueSpec("probe", ("share.accepted",))


async def test_list_then_replay(amqp_url: str) -> None:
    """Two dead letters are listed (ids and cause, no body), then replayed and consumed."""
    poison = [
        OutgoingMessage("share.accepted", b'{"secret": "DOE^JANE"}', f"dead-{n}") for n in (1, 2)
    ]
    await collect(amqp_url, SPEC, "dead_letter", 2, *poison)

    [queue] = await list_dead_letters(amqp_url, ["probe", "never-ran"], sample=5)
    assert queue.service == "probe"
    assert queue.depth == 2
    assert {letter.message_id for letter in queue.sample} == {"dead-1", "dead-2"}
    assert {letter.reason for letter in queue.sample} == {"rejected"}
    assert {letter.routing_key for letter in queue.sample} == {"share.accepted"}
    [still] = await list_dead_letters(amqp_url, ["probe"])
    assert still.depth == 2, "listing must not consume"

    assert await replay(amqp_url, "probe", limit=1) == 1
    assert await replay(amqp_url, "probe") == 1
    replayed = await collect(amqp_url, SPEC, "ack", 2)
    assert sorted(d.message_id or "" for d in replayed) == ["dead-1", "dead-2"]
    [empty] = await list_dead_letters(amqp_url, ["probe"])
    assert empty.depth == 0
