"""Outages and refusals on the real system: ``blume-share run`` on RabbitMQ and PostgreSQL,
an aiosmtpd server the test stops and starts, requests published with pika.

Issue 8, defect 3: a 30 s SMTP outage turned shares into ``failed`` (the budget was 5
attempts x 5 s). An outage is now ridden out, visibly: the share waits, then completes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from blume_contracts.envelope import RawEvent
from blume_contracts.ids import share_id_for

from tests.conftest import RunningSystem, blume_share, request_event

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

OLD_BUDGET_SECONDS = 5 * 5
"""What an outage could last before this fix failed the share (5 attempts, 5 s apart)."""


@pytest.fixture
def system_env(system_env: dict[str, str]) -> dict[str, str]:
    """Retries at most 2 s apart, so the email goes soon after the server is back."""
    return {**system_env, "BLUME_RETRY_MAX_DELAY_SECONDS": "2"}


def status(system: RunningSystem, share_id: str) -> dict[str, Any]:
    result = blume_share("status", share_id, "--json", env=system.env)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


async def test_an_smtp_outage_longer_than_the_old_budget_ends_completed_with_one_email(
    system: RunningSystem, smtp_server: Any
) -> None:
    """With the SMTP server down for longer than the old budget, the share waits (status
    shows it, nothing fails); once the server is back it completes with exactly one email."""
    smtp_server.stop()
    outage_started = time.monotonic()
    request = request_event()
    system.publish(request)
    share_id = share_id_for(RawEvent.model_validate(request))

    [delayed] = await system.wait_for("share.notification.delayed", share_id=share_id)
    assert (delayed["data"]["error_class"], delayed["data"]["purpose"]) == (
        "smtp_unavailable",
        "share",
    )
    deadline = time.monotonic() + 30
    while (now := status(system, share_id))["state"] != "waiting":
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.3)
    assert now["reason"] == "smtp_unavailable"
    assert now["waiting_since"] is not None
    shown = blume_share("status", share_id, env=system.env).stdout.splitlines()[0]
    assert shown.startswith("waiting: smtp_unavailable since ")

    await asyncio.sleep(max(0.0, OLD_BUDGET_SECONDS + 5 - (time.monotonic() - outage_started)))
    assert system.events("share.failed", share_id=share_id) == []
    assert system.events("share.notification.failed", share_id=share_id) == []
    assert status(system, share_id)["state"] == "waiting"
    assert smtp_server.messages == []

    smtp_server.start()
    await system.wait_for("share.completed", share_id=share_id, timeout=60)
    assert status(system, share_id)["state"] == "completed"
    assert len(smtp_server.messages) == 1
    assert len(system.events("share.notification.delayed", share_id=share_id)) == 1
    assert system.events("share.failed", share_id=share_id) == []


async def test_a_recipient_refused_for_good_fails_the_share_at_once(
    system: RunningSystem, smtp_server: Any
) -> None:
    """A 550 (recipient refused) is permanent: share.failed (smtp_rejected) without retries
    or a waiting state."""
    smtp_server.reject_with = "550 5.1.1 mailbox unavailable"
    request = request_event()
    started = time.monotonic()
    system.publish(request)
    share_id = share_id_for(RawEvent.model_validate(request))
    [failed] = await system.wait_for("share.failed", share_id=share_id)
    assert failed["data"]["reason"] == "smtp_rejected"
    assert time.monotonic() - started < 15
    assert system.events("share.notification.delayed", share_id=share_id) == []
    assert status(system, share_id)["state"] == "failed"
