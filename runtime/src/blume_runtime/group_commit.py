"""Group commit: work that arrives while a batch is running waits, then goes together.

A worker's deliveries each call ``submit``. When nothing is running, the caller runs its own
work alone at once (``run_one``), exactly as it would without this class: no added wait, no
added statement. Work that arrives meanwhile queues; when the running batch ends, the first
queued caller takes everything queued by then (up to ``max_size``) and runs it as one batch
(``run_many``), in its own task, while the others wait for their results. Nobody lingers for
more work: a batch is what was already waiting.

``run_many`` answers, per item, its result or ``RUN_ALONE``: the batch could not settle that
item (a neighbour failed and the batch was rolled back). The item's own caller then runs it
alone (``run_one``) outside the queue, so its outcome is its own. A batch whose runner is
cancelled leaves every unanswered item to run alone too.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

Work = TypeVar("Work")
Result = TypeVar("Result")


class Signal:
    """An answer that is not a result: ``RUN_ALONE``, or the lead handed to a caller."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


RUN_ALONE: Final = Signal("RUN_ALONE")
"""What ``run_many`` answers for an item the batch did not settle."""
_LEAD: Final = Signal("LEAD")
"""Wakes a queued caller to run the next batch."""


@dataclass(eq=False, slots=True)
class _Queued(Generic[Work, Result]):
    work: Work
    answer: asyncio.Future[Result | Signal] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit(Generic[Work, Result]):
    """Runs submitted work alone when idle, else in batches of what queued meanwhile."""

    def __init__(
        self,
        run_one: Callable[[Work], Awaitable[Result]],
        run_many: Callable[[Sequence[Work]], Awaitable[Sequence[Result | Signal]]],
        max_size: int,
    ) -> None:
        if max_size < 1:
            raise ValueError("a batch holds at least one item")
        self._run_one = run_one
        self._run_many = run_many
        self._max_size = max_size
        self._queue: deque[_Queued[Work, Result]] = deque()
        self._busy = False

    async def submit(self, work: Work) -> Result:
        """The result of ``work``, run alone or in a batch; its own exception if alone."""
        if not self._busy:
            self._busy = True
            try:
                return await self._run_one(work)
            finally:
                self._hand_over()
        queued: _Queued[Work, Result] = _Queued(work)
        self._queue.append(queued)
        try:
            answer = await queued.answer
        except asyncio.CancelledError:
            self._withdraw(queued)
            raise
        if answer is _LEAD:
            answer = await self._lead(queued)
        if isinstance(answer, Signal):  # RUN_ALONE: outside the queue, as if alone
            return await self._run_one(work)
        return answer

    async def _lead(self, leader: _Queued[Work, Result]) -> Result | Signal:
        """Run the leader and what queued behind it; answer the others, return the leader's."""
        batch = [leader]
        while self._queue and len(batch) < self._max_size:
            batch.append(self._queue.popleft())
        try:
            if len(batch) == 1:
                return await self._run_one(leader.work)
            try:
                answers = await self._run_many([queued.work for queued in batch])
            except Exception:  # noqa: BLE001 - every item is then run alone, as it would be
                answers = [RUN_ALONE] * len(batch)
            for queued, answer in zip(batch[1:], answers[1:], strict=True):
                if not queued.answer.done():  # done: its caller was cancelled meanwhile
                    queued.answer.set_result(answer)
            return answers[0]
        finally:
            for queued in batch[1:]:
                if not queued.answer.done():
                    queued.answer.set_result(RUN_ALONE)
            self._hand_over()

    def _withdraw(self, queued: _Queued[Work, Result]) -> None:
        """A queued caller was cancelled: leave the queue, or pass on the lead it was given."""
        if queued in self._queue:
            self._queue.remove(queued)
        elif not queued.answer.cancelled() and queued.answer.result() is _LEAD:
            self._hand_over()

    def _hand_over(self) -> None:
        """Wake the first queued caller to run the next batch, or become idle."""
        while self._queue:
            queued = self._queue.popleft()
            if not queued.answer.done():
                queued.answer.set_result(_LEAD)
                return
        self._busy = False
