"""Coalesced acks: one ``multiple`` frame where exact, never past a delivery not done."""

from __future__ import annotations

import asyncio

import pytest
from blume_runtime.acks import ChannelAcks


class RecordingChannel:
    """The frames a channel was asked to send, in order; optionally closed."""

    def __init__(self, drain_turns: int = 1) -> None:
        self.drain_turns = drain_turns
        self.frames: list[tuple[int, bool]] = []
        self.closed = False
        self.finished: list[int] = []
        """Set by a test: the deliveries whose handling is over; each frame must cover
        only those."""
        self.premature: list[int] = []
        self.writing = asyncio.Event()
        """Set once a frame is being written."""

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        if self.closed:
            raise ConnectionError("channel closed")
        self.frames.append((delivery_tag, multiple))
        self.writing.set()
        if self.finished:
            covered = range(1, delivery_tag + 1) if multiple else [delivery_tag]
            self.premature += [tag for tag in covered if tag not in self.finished]
        for _ in range(self.drain_turns):  # the drain: other tasks run while it is written
            await asyncio.sleep(0)


def acked(frames: list[tuple[int, bool]], delivered: list[int]) -> list[int]:
    """The tags a broker would take as acked by these frames (each tag at most once)."""
    done: list[int] = []
    for tag, multiple in frames:
        covered = [t for t in delivered if t <= tag and t not in done] if multiple else [tag]
        assert tag not in done, f"tag {tag} acked twice: the broker closes the channel"
        done.extend(covered)
    return done


async def test_deliveries_finishing_together_are_acked_in_one_frame() -> None:
    """Three deliveries acked in one turn of the loop, nothing else in flight: one frame,
    ``multiple`` up to the highest, and every ack returns once it is written."""
    channel = RecordingChannel()
    acks = ChannelAcks(channel)
    for tag in (1, 2, 3):
        acks.delivered(tag)
    await asyncio.gather(acks.ack(2), acks.ack(1), acks.ack(3))
    assert channel.frames == [(3, True)]


async def test_an_ack_is_never_sent_past_a_delivery_still_being_handled() -> None:
    """Tag 2 is still being handled when 1 and 3 finish: 1 is acked (alone or as a run up
    to 1), 3 on its own, at once; 2 is acked by no frame until it finishes."""
    channel = RecordingChannel()
    acks = ChannelAcks(channel)
    for tag in (1, 2, 3):
        acks.delivered(tag)
    await asyncio.gather(acks.ack(1), acks.ack(3))
    assert acked(channel.frames, [1, 2, 3]) == [1, 3]
    await acks.ack(2)
    assert acked(channel.frames, [1, 2, 3]) == [1, 3, 2]


async def test_a_delivery_given_back_no_longer_holds_back_the_run_after_it() -> None:
    """A delivery nacked (released) or rejected is settled: once its frame is queued, the
    deliveries above it are acked together again, and the nacked one is not acked."""
    channel = RecordingChannel()
    acks = ChannelAcks(channel)
    for tag in (1, 2, 3, 4):
        acks.delivered(tag)
    acks.settled_otherwise(2)
    await asyncio.gather(acks.ack(1), acks.ack(3), acks.ack(4))
    assert channel.frames == [(4, True)]


async def test_flushes_that_overlap_never_ack_a_tag_twice() -> None:
    """Acks keep arriving while earlier frames are still being written, out of order and
    with deliveries in flight: every frame sequence acks each tag exactly once, none
    before its delivery finished."""
    channel = RecordingChannel()
    acks = ChannelAcks(channel)
    order = [5, 1, 7, 2, 3, 9, 4, 6, 8, 10, 12, 11]
    for tag in range(1, 13):
        acks.delivered(tag)
    finished = channel.finished

    async def finish(tag: int, after: int) -> None:
        for _ in range(after):
            await asyncio.sleep(0)
        finished.append(tag)
        await acks.ack(tag)

    await asyncio.gather(*(finish(tag, turn % 4) for turn, tag in enumerate(order)))
    assert sorted(acked(channel.frames, list(range(1, 13)))) == list(range(1, 13))
    assert channel.premature == []
    assert any(multiple for _, multiple in channel.frames)
    assert any(not multiple for _, multiple in channel.frames)


async def test_an_ack_decided_alone_is_not_covered_by_a_later_run_before_it_is_sent() -> None:
    """1 and 3 finish while 2 is in flight: 3 must go alone, after 1's frame. If 2 and 4
    finish while 1's frame is still being written, their run may not reach over 3, whose
    own frame is still to come (a tag acked twice closes the channel)."""
    channel = RecordingChannel(drain_turns=5)
    acks = ChannelAcks(channel)
    for tag in (1, 2, 3, 4):
        acks.delivered(tag)
    early = [asyncio.create_task(acks.ack(tag)) for tag in (1, 3)]
    await channel.writing.wait()
    late = [asyncio.create_task(acks.ack(tag)) for tag in (2, 4)]
    await asyncio.gather(*early, *late)
    assert sorted(acked(channel.frames, [1, 2, 3, 4])) == [1, 2, 3, 4]


async def test_a_closed_channel_fails_every_ack_waiting_on_it() -> None:
    """The frame cannot be written: each delivery whose ack it carried gets the error (the
    worker then leaves the message to the broker, which redelivers it)."""
    channel = RecordingChannel()
    channel.closed = True
    acks = ChannelAcks(channel)
    for tag in (1, 2):
        acks.delivered(tag)
    results = await asyncio.gather(acks.ack(1), acks.ack(2), return_exceptions=True)
    assert [type(result) for result in results] == [ConnectionError, ConnectionError]


async def test_a_cancelled_waiter_does_not_break_the_others() -> None:
    """A delivery cancelled while its ack is on its way (shutdown): the frame still goes,
    and the other acks in it return normally."""
    channel = RecordingChannel()
    acks = ChannelAcks(channel)
    for tag in (1, 2):
        acks.delivered(tag)
    first = asyncio.create_task(acks.ack(1))
    second = asyncio.create_task(acks.ack(2))
    await asyncio.sleep(0)
    first.cancel()
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert channel.frames == [(2, True)]
