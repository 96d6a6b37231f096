"""Rate limits shared by gateway instances through Redis (BLUME_RATE_LIMIT_STORAGE_URL)."""

from __future__ import annotations

import os
import uuid

import pytest
from blume_access_gateway.ratelimit import RateLimits

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("BLUME_TEST_REDIS_URL", "redis://127.0.0.1:6379")


async def test_two_instances_share_one_budget() -> None:
    """A client cannot double its attempts by alternating between two gateway instances."""
    limits = [
        RateLimits(REDIS_URL, per_ip="4/minute", per_token="100/minute", code_requests="5/hour")
        for _ in range(2)
    ]
    address = f"198.51.100.{uuid.uuid4().int % 250}"
    token_key = f"test-{uuid.uuid4().hex}"
    verdicts = [await limits[attempt % 2].link_request(address, token_key) for attempt in range(6)]
    assert [verdict.allowed for verdict in verdicts] == [True] * 4 + [False] * 2
    assert verdicts[-1].retry_after_seconds > 0
