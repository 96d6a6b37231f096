"""A probe service behind a real ``Worker`` on SQLite, and the JSON log lines it writes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import ShareAccepted, ShareCompleted
from blume_runtime.db import Database, InboxEntry, OutboxMessage
from blume_runtime.outbox import OutboxRelay
from blume_runtime.service import HandlerContext, RetryNotice, Service
from blume_runtime.settings import Settings
from blume_runtime.testing import RecordingTransport
from blume_runtime.worker import Worker
from pydantic import ValidationError
from sqlmodel import SQLModel

SHARE = "shr_" + "b" * 32
NOW = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
Behaviour = Callable[[], None]


async def runtime_tables(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.run_sync(
            SQLModel.metadata.create_all,
            tables=[InboxEntry.__table__, OutboxMessage.__table__],  # type: ignore[attr-defined]
        )


def accepted_event(event_id: str = "evt-1", **envelope: Any) -> CloudEvent[ShareAccepted]:
    fields: dict[str, Any] = {
        "id": event_id,
        "source": "/blume-share/share_dispatcher",
        "type": "share.accepted",
        "time": NOW,
        "tenantid": "demo-hospital",
        "correlationid": "corr-1",
        "data": ShareAccepted(share_id=SHARE, method="external_link"),
        **envelope,
    }
    return CloudEvent[ShareAccepted](**fields)


class Probe:
    """A service handling ``share.accepted`` by emitting ``share.completed``; each hook and
    the handler record their calls, and ``behaviour`` lets a test make the handler fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.behaviour: Behaviour | None = None
        self.hang_seconds = 0.0
        self.notices: list[RetryNotice] = []
        self.answered: list[str] = []
        self.exhausted_answer = False
        self.service = Service("probe")
        self.service.handles("share.accepted")(self.handle)
        self.service.handles("study.send.requested")(self.handle)
        self.service.on_invalid_envelope("study.send.requested")(self.answer)
        self.service.on_retry_scheduled(self.notice)
        self.service.on_exhausted(self.give_up)

    async def handle(self, event: CloudEvent[Any], ctx: HandlerContext) -> None:
        self.calls += 1
        ctx.emit(
            "share.completed",
            ShareCompleted(share_id=SHARE, method="external_link", completed_at=NOW),
        )
        if self.hang_seconds:
            await asyncio.sleep(self.hang_seconds)
        if self.behaviour is not None:
            self.behaviour()

    async def answer(self, event: Any, _error: ValidationError, _ctx: HandlerContext) -> None:
        self.answered.append(f"{event.tenantid}|{event.correlationid}")

    async def notice(self, _event: Any, notice: RetryNotice, _ctx: HandlerContext) -> None:
        self.notices.append(notice)

    async def give_up(self, _event: Any, error_class: str, _ctx: HandlerContext) -> bool:
        self.answered.append(f"exhausted:{error_class}")
        return self.exhausted_answer


def probe_worker(
    db: Database, probe: Probe, settings: Settings, **options: Any
) -> tuple[Worker, RecordingTransport]:
    transport = RecordingTransport()
    return Worker(probe.service, db, OutboxRelay(db, transport), settings, **options), transport


class JsonLines:
    """The process's log output, as configured for production (JSON), parsed line by line."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def read(self) -> list[dict[str, Any]]:
        text = self._capsys.readouterr().err
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def settled(self) -> list[dict[str, Any]]:
        lines = self.read()
        assert [line["event"] for line in lines] == ["delivery settled"], lines
        return lines


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(state_dir=tmp_path, **overrides)
