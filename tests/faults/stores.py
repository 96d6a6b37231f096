"""Reading the system's own stores after (and during) a run, through its own table models, so
that a table moving to another schema moves the suite's queries with it."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from blume_audit_sink.models import AuditPending, AuditRecord
from blume_runtime.db import Database
from blume_share_dispatcher.models import Share
from sqlalchemy import func, select
from sqlmodel import col

from tests.faults.processes import FaultSuiteError
from tests.faults.workers import run_cli

CHUNK: Final = 500


class Stores:
    def __init__(self, database_url: str) -> None:
        self._db = Database(database_url)

    async def share_states(self, share_ids: Sequence[str]) -> dict[str, str]:
        states: dict[str, str] = {}
        async with self._db.transaction() as session:
            for start in range(0, len(share_ids), CHUNK):
                chunk = share_ids[start : start + CHUNK]
                rows = await session.execute(
                    select(col(Share.share_id), col(Share.state)).where(
                        col(Share.share_id).in_(chunk)
                    )
                )
                states.update((share_id, str(state)) for share_id, state in rows.all())
        return states

    async def audit_counts(self) -> dict[tuple[str, str], int]:
        """(source, id) -> how often the audit store holds it: its records, or 1 if it is
        only staged still. Several staged copies of one event (its producer's, a request's
        consumers', the sink's) are one: the sealer chains the first and drops the rest."""
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        async with self._db.transaction() as session:
            rows = await session.execute(
                select(
                    col(AuditRecord.event_source), col(AuditRecord.event_id), func.count()
                ).group_by(col(AuditRecord.event_source), col(AuditRecord.event_id))
            )
            for source, event_id, count in rows.all():
                counts[(source, event_id)] += int(count)
            staged = await session.execute(
                select(col(AuditPending.event_source), col(AuditPending.event_id)).distinct()
            )
            for source, event_id in staged.all():
                counts[(source, event_id)] = counts[(source, event_id)] or 1
        return dict(counts)

    async def close(self) -> None:
        await self._db.dispose()


def dead_letter_causes(env: Mapping[str, str], services: Iterable[str]) -> dict[str, int]:
    """Dead letters by cause, from ``blume-share dlq list`` (its JSON output once it has one)."""
    if "--json" in run_cli(env, "dlq", "list", "--help"):
        causes: collections.Counter[str] = collections.Counter()
        _count_causes(json.loads(run_cli(env, "dlq", "list", "--json", "--show", "100")), causes)
        return dict(causes)
    return _text_causes(run_cli(env, "dlq", "list", "--show", "100"), set(services))


def _count_causes(node: Any, causes: collections.Counter[str]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("cause"), str):
            causes[node["cause"]] += 1
        for value in node.values():
            _count_causes(value, causes)
    elif isinstance(node, list):
        for value in node:
            _count_causes(value, causes)


def _text_causes(listing: str, services: set[str]) -> dict[str, int]:
    """Today's text: ``<service> <depth>``, then ``  <id>  <type>  <reason>`` per message."""
    causes: collections.Counter[str] = collections.Counter()
    unlisted = 0
    for line in listing.splitlines():
        words = line.split()
        if not words:
            continue
        if line.startswith("  "):
            causes[words[-1]] += 1
            unlisted -= 1
        elif words[0] in services and words[-1].isdigit():
            unlisted += int(words[-1])
        else:
            raise FaultSuiteError(f"cannot read dlq list output line: {line!r}")
    if unlisted > 0:
        causes["(beyond the first 100 per queue)"] += unlisted
    return dict(causes)
