"""Group commit: deliveries that queue up while a transaction runs share the next one.

``GroupCommit`` on its own (plain asyncio), then a real ``Worker`` on SQLite: a batch of
deliveries commits once, each keeps its own decision, effects and log context, and a batch
that fails is rolled back and run again one delivery at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from blume_runtime.db import Database
from blume_runtime.group_commit import RUN_ALONE, GroupCommit, Signal
from blume_runtime.service import PermanentError
from blume_runtime.testing import FakeDelivery
from blume_runtime.transport import DeadLetterCause

from runtime.tests.batch_support import (
    Gated,
    behind_gate,
    committed,
    committing_behind_gate,
    gated_worker,
)
from runtime.tests.pipeline_support import JsonLines, accepted_event

# --- GroupCommit alone -------------------------------------------------------------------


class Runs:
    """Records what ran alone and in which batches; a batch can be made to answer RUN_ALONE."""

    def __init__(self) -> None:
        self.alone: list[str] = []
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.refuse: set[str] = set()

    async def one(self, work: str) -> str:
        self.alone.append(work)
        if work == "first":
            await self.release.wait()
        return f"{work}:alone"

    async def many(self, works: Sequence[str]) -> list[str | Signal]:
        self.batches.append(list(works))
        if self.refuse & set(works):
            return [RUN_ALONE] * len(works)
        return [f"{work}:batched" for work in works]


async def behind_first(group: GroupCommit[str, str], runs: Runs, *later: str) -> list[str]:
    """Submit ``first`` (held until released), then ``later`` while it runs; all results."""
    first = asyncio.create_task(group.submit("first"))
    await asyncio.sleep(0)
    others = [asyncio.create_task(group.submit(work)) for work in later]
    await asyncio.sleep(0)
    runs.release.set()
    return list(await asyncio.gather(first, *others))


async def test_work_submitted_when_idle_runs_alone_at_once() -> None:
    """Nothing running: the work runs alone, no batch is formed and nothing waits."""
    runs = Runs()
    runs.release.set()
    group = GroupCommit(runs.one, runs.many, max_size=16)
    assert await group.submit("only") == "only:alone"
    assert await group.submit("next") == "next:alone"
    assert (runs.alone, runs.batches) == (["only", "next"], [])


async def test_work_that_queued_behind_a_running_one_goes_in_one_batch_in_order() -> None:
    """Three submitted while the first runs: one batch of the three, in arrival order."""
    runs = Runs()
    group = GroupCommit(runs.one, runs.many, max_size=16)
    results = await behind_first(group, runs, "a", "b", "c")
    assert results == ["first:alone", "a:batched", "b:batched", "c:batched"]
    assert runs.batches == [["a", "b", "c"]]


async def test_a_batch_holds_at_most_max_size() -> None:
    """Five queued with a batch size of two: batches of two, two and one (run alone)."""
    runs = Runs()
    group = GroupCommit(runs.one, runs.many, max_size=2)
    results = await behind_first(group, runs, "a", "b", "c", "d", "e")
    assert results[1:] == ["a:batched", "b:batched", "c:batched", "d:batched", "e:alone"]
    assert runs.batches == [["a", "b"], ["c", "d"]]


async def test_an_item_the_batch_did_not_settle_runs_alone() -> None:
    """A batch answering RUN_ALONE: each of its items is run alone by its own caller."""
    runs = Runs()
    runs.refuse = {"b"}
    group = GroupCommit(runs.one, runs.many, max_size=16)
    results = await behind_first(group, runs, "a", "b")
    assert results == ["first:alone", "a:alone", "b:alone"]
    assert sorted(runs.alone) == ["a", "b", "first"]


async def test_a_cancelled_waiter_leaves_the_queue_and_the_rest_still_run() -> None:
    """A queued caller cancelled before its turn is not run; the others are."""
    runs = Runs()
    group = GroupCommit(runs.one, runs.many, max_size=16)
    first = asyncio.create_task(group.submit("first"))
    await asyncio.sleep(0)
    gone, kept = (asyncio.create_task(group.submit(work)) for work in ("gone", "kept"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    runs.release.set()
    assert await asyncio.gather(first, kept) == ["first:alone", "kept:alone"]
    assert gone.cancelled()
    assert "gone" not in runs.alone + [work for batch in runs.batches for work in batch]


async def test_a_caller_cancelled_while_its_batch_runs_leaves_the_others_their_results() -> None:
    """A batch member cancelled mid-batch: the leader and the other member still get their
    results, and the next submission runs at once (nothing left busy)."""
    runs = Runs()
    batch_running = asyncio.Event()
    finish_batch = asyncio.Event()

    async def slow_many(works: Sequence[str]) -> list[str | Signal]:
        batch_running.set()
        await finish_batch.wait()
        return await runs.many(works)

    group = GroupCommit(runs.one, slow_many, max_size=16)
    first = asyncio.create_task(group.submit("first"))
    await asyncio.sleep(0)
    lead, gone, kept = (asyncio.create_task(group.submit(work)) for work in ("a", "b", "c"))
    await asyncio.sleep(0)
    runs.release.set()
    await batch_running.wait()
    gone.cancel()
    await asyncio.sleep(0)
    finish_batch.set()
    assert await asyncio.gather(first, lead, kept) == ["first:alone", "a:batched", "c:batched"]
    assert gone.cancelled()
    assert await asyncio.wait_for(group.submit("later"), timeout=1) == "later:alone"


# --- a Worker batching on SQLite ---------------------------------------------------------


async def test_deliveries_that_queued_commit_in_one_transaction(
    db: Database, tmp_path: Path
) -> None:
    """Four deliveries arriving while one runs: two transactions in all (the first alone,
    the four together), each acked with its own event published once."""
    gated = Gated()
    worker, transport = gated_worker(db, gated, tmp_path)
    deliveries, committed_transactions = await committing_behind_gate(
        worker, gated, ["a", "b", "c", "d"]
    )
    assert committed_transactions == 2
    assert [delivery.settlement for delivery in deliveries] == ["ack"] * 4
    assert await committed(db) == (["a", "b", "c", "d"], 5)
    completed = transport.events("share.completed")
    assert len({event["id"] for event in completed}) == len(completed) == 5


async def test_each_handler_of_a_batch_runs_in_its_own_delivery_log_context(
    db: Database, tmp_path: Path
) -> None:
    """In a batch, a handler's log lines carry its own event's id, not its neighbour's."""
    gated = Gated()
    worker, _ = gated_worker(db, gated, tmp_path)
    await behind_gate(worker, gated, ["a", "b"])
    assert gated.logged_ids == {"gate": "gate", "a": "a", "b": "b"}


async def test_a_failing_handler_does_not_fail_its_neighbours(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """The middle one of a batch of three fails: the batch is rolled back, each runs alone;
    the neighbours are acked with their effects committed once, the failing one retried."""
    gated = Gated()
    gated.failing = {"b"}
    worker, transport = gated_worker(db, gated, tmp_path)
    first, failing, last = await behind_gate(worker, gated, ["a", "b", "c"])
    assert (first.settlement, failing.settlement, last.settlement) == ("ack", "retry", "ack")
    assert failing.error_class == "unexpected"
    assert await committed(db) == (["a", "c"], 3)
    completed = transport.events("share.completed")
    assert len({event["id"] for event in completed}) == len(completed) == 3
    assert gated.runs.count("b") == 2  # once in the rolled-back batch, once alone
    outcomes = {line.get("event_id"): line.get("decision") for line in json_lines.read()}
    assert {key: outcomes[key] for key in ("a", "b", "c")} == {
        "a": "ack",
        "b": "retry",
        "c": "ack",
    }


async def test_a_permanent_failure_in_a_batch_dead_letters_only_its_delivery(
    db: Database, tmp_path: Path
) -> None:
    """A contract breach in a batch: that delivery dead-lettered (contract), the other acked."""
    gated = Gated()
    gated.failing = {"a"}
    gated.failure = PermanentError("breaks its contract")
    worker, _ = gated_worker(db, gated, tmp_path)
    broken, fine = await behind_gate(worker, gated, ["a", "b"])
    assert (broken.settlement, broken.cause) == ("dead_letter", DeadLetterCause.CONTRACT)
    assert fine.settlement == "ack"
    assert await committed(db) == (["b"], 2)


async def test_a_duplicate_inside_a_batch_is_acked_as_duplicate_without_a_second_effect(
    db: Database, tmp_path: Path, json_lines: JsonLines
) -> None:
    """Two copies of one event in the same batch: both acked, one handler run, one effect."""
    gated = Gated()
    worker, _ = gated_worker(db, gated, tmp_path)
    (copy, again, other), committed_transactions = await committing_behind_gate(
        worker, gated, ["a", "a", "b"]
    )
    assert committed_transactions == 2
    assert (copy.settlement, again.settlement, other.settlement) == ("ack", "ack", "ack")
    assert gated.runs == ["gate", "a", "b"]
    assert await committed(db) == (["a", "b"], 3)
    settled = [line for line in json_lines.read() if line["event"] == "delivery settled"]
    assert sorted(line["outcome"] for line in settled if line.get("event_id") == "a") == [
        "duplicate",
        "processed",
    ]


async def test_an_event_processed_before_is_a_duplicate_in_a_batch(
    db: Database, tmp_path: Path
) -> None:
    """A redelivery of an event processed earlier, batched with a new one: no second run."""
    gated = Gated()
    gated.release.set()
    worker, _ = gated_worker(db, gated, tmp_path)
    await worker(FakeDelivery.of(accepted_event("a")))
    gated.release.clear()
    gated.runs.clear()
    redelivered, new = await behind_gate(worker, gated, ["a", "b"])
    assert (redelivered.settlement, new.settlement) == ("ack", "ack")
    assert gated.runs == ["gate", "b"]


async def test_a_service_that_opts_out_gives_every_delivery_its_own_transaction(
    db: Database, tmp_path: Path
) -> None:
    """``group_commit=False`` (handlers with effects outside the database): no batches."""
    gated = Gated(group_commit=False)
    worker, _ = gated_worker(db, gated, tmp_path)
    deliveries, committed_transactions = await committing_behind_gate(
        worker, gated, ["a", "b", "c"]
    )
    assert committed_transactions == 4
    assert [delivery.settlement for delivery in deliveries] == ["ack"] * 3


@pytest.mark.parametrize("size", [2, 16])
async def test_a_batch_of_any_size_up_to_the_prefetch_commits_once(
    db: Database, tmp_path: Path, size: int
) -> None:
    """Up to the prefetch (16), what queued is one batch: one more transaction whatever N."""
    gated = Gated()
    worker, _ = gated_worker(db, gated, tmp_path)
    deliveries, committed_transactions = await committing_behind_gate(
        worker, gated, [f"e{index}" for index in range(size)]
    )
    assert committed_transactions == 2
    assert all(delivery.settlement == "ack" for delivery in deliveries)
