"""Events as they reach the audit sink: raw envelopes, data left as plain JSON."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest
from blume_contracts.envelope import RawEvent

FIRST_EVENT_TIME = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


class EventFactory(Protocol):
    def __call__(
        self,
        event_type: str,
        data: Any,
        *,
        tenant: str,
        correlation_id: str = ...,
        time: datetime | None = ...,
    ) -> RawEvent: ...


@pytest.fixture
def make_event() -> EventFactory:
    """Raw envelopes with unique ids; by default each occurs a minute after the previous."""
    counter = itertools.count(1)

    def factory(
        event_type: str,
        data: Any,
        *,
        tenant: str,
        correlation_id: str = "corr-1",
        time: datetime | None = None,
    ) -> RawEvent:
        number = next(counter)
        return RawEvent(
            id=f"evt-{number:04d}",
            source="/blume-share/test",
            type=event_type,
            time=time or FIRST_EVENT_TIME + timedelta(minutes=number),
            tenantid=tenant,
            correlationid=correlation_id,
            data=copy.deepcopy(data),
        )

    return factory
