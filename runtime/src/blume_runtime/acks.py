"""A channel's acks, coalesced into one ``basic.ack(multiple=True)`` where that is exact.

The deliveries of a group commit finish together, and each acked on its own cost a frame,
a write and, on a quorum queue, a settle command in the queue's log. Acks requested in the
same turn of the event loop go out as one frame when nothing they would cover is still
unsettled: ``multiple=True`` acks every unacked delivery up to its tag, so it may only be
sent up to the lowest delivery still being handled (or waiting to be retried, released or
dead-lettered). An ack above that delivery goes out on its own, at once: an ack is never
held back waiting for a slower delivery, and a delivery that is not done is never acked.

A tag is known from the moment its delivery arrives (``delivered``, the first thing its
task does: aiormq starts the tasks in delivery order, so every tag that could be acked is
below any tag not known yet). A delivery settled another way (``nack``, ``reject``) stays
in the way of a multiple ack until its own frame is queued, which puts it on the wire
first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol


class AckingChannel(Protocol):
    """What of aiormq's channel acking needs."""

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> Awaitable[None]: ...


class ChannelAcks:
    """The acks of one channel (delivery tags are the channel's own)."""

    def __init__(self, channel: AckingChannel) -> None:
        self._channel = channel
        self._unsettled: set[int] = set()
        """Delivered and neither acked (nor waiting for its ack) nor settled otherwise."""
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._unsent: set[int] = set()
        """Acks decided to go on their own, their frames not queued yet: a later multiple
        ack must not cover them (their own frame would then ack an acked tag, which closes
        the channel)."""
        self._flushing: asyncio.Task[None] | None = None
        self.frames = 0
        """Ack frames sent, for tests and the curious: fewer than acks when coalesced."""

    def delivered(self, tag: int) -> None:
        self._unsettled.add(tag)

    def settled_otherwise(self, tag: int) -> None:
        """Call once the delivery's nack or reject frame is queued on the channel."""
        self._unsettled.discard(tag)

    async def ack(self, tag: int) -> None:
        """Ack this delivery, with the others acked in this turn where that is exact;
        returns once its frame is written, raises if it could not be."""
        self._unsettled.discard(tag)
        waiting = asyncio.get_running_loop().create_future()
        self._waiting[tag] = waiting
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        await waiting

    async def _flush(self) -> None:
        # Decided and the multiple ack's frame queued with no await in between: nothing can
        # become unsettled below its tag meanwhile.
        self._flushing = None
        waiting, self._waiting = self._waiting, {}
        lowest_in_the_way = min(self._unsettled | self._unsent, default=None)
        together = sorted(
            tag for tag in waiting if lowest_in_the_way is None or tag < lowest_in_the_way
        )
        alone = sorted(set(waiting).difference(together))
        self._unsent.update(alone)
        groups = ([together] if together else []) + [[tag] for tag in alone]
        for group in groups:
            try:
                await self._channel.basic_ack(group[-1], multiple=len(group) > 1)
            except Exception as error:  # noqa: BLE001 - each waiting delivery gets it
                outcome: BaseException | None = error
            else:
                outcome = None
            self._unsent.difference_update(group)
            self.frames += 1
            for tag in group:
                future = waiting[tag]
                if future.done():  # its delivery was cancelled while waiting
                    continue
                if outcome is None:
                    future.set_result(None)
                else:
                    future.set_exception(outcome)
