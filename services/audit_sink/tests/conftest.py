"""Events as they reach the audit sink: raw envelopes, data left as plain JSON."""

from __future__ import annotations

import copy
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest
from blume_contracts.envelope import RawEvent

FIRST_EVENT_TIME = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _logs_to_this_tests_stderr() -> None:
    """Point structlog at the stderr of this test.

    ``configure_logging`` binds the stream it finds; a test that ran it under capture
    elsewhere leaves it bound to a closed stream, and the sink's own log lines would fail.
    """
    from blume_runtime.logging import configure_logging

    configure_logging("INFO", "json")


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


def request_data(
    *,
    mrn: str = "MRN-0001",
    recipient: tuple[str, str] = ("Dr. Bob Jones", "bob.jones@clinic.example"),
    description: str = "CT CHEST W CONTRAST",
    study_uid: str = "1.2.840.113619.2.55.3.604688119.868.1234567890.123",
) -> dict[str, Any]:
    """A study.send.requested body, as upstream sends it."""
    return {
        "method": "external_link",
        "tenant_id": "demo-hospital",
        "study": {
            "study_instance_uid": study_uid,
            "accession_number": "ACC-2026-0001",
            "study_date": "2026-11-20",
            "modalities": ["CT"],
            "description": description,
            "patient": {"mrn": mrn, "name": "DOE^JANE", "birth_date": "1980-01-02"},
        },
        "sender": {"user_id": "u-123", "name": "Dr. Alice Smith", "email": "alice@demo.example"},
        "recipient": {"name": recipient[0], "email": recipient[1]},
        "message": "Please review before Friday's consult.",
        "expires_in_hours": 72,
        "locale": "en-CA",
    }


def share_life(
    make_event: EventFactory,
    *,
    tenant: str = "demo-hospital",
    mrn: str = "MRN-0001",
    recipient: tuple[str, str] = ("Dr. Bob Jones", "bob.jones@clinic.example"),
    description: str = "CT CHEST W CONTRAST",
    accessed: bool = True,
    correlation_id: str | None = None,
) -> list[RawEvent]:
    """The events of one external share, request to access, as the sink receives them.

    The share id is the one the dispatcher derives from the request's dedupe key. The
    correlation id is fresh unless given (a test pinning what is stored gives one).
    """
    from blume_contracts.ids import share_id_for

    correlation = correlation_id or f"corr-{uuid.uuid4().hex}"
    request = make_event(
        "study.send.requested",
        request_data(mrn=mrn, recipient=recipient, description=description),
        tenant=tenant,
        correlation_id=correlation,
    )
    share_id = share_id_for(request)
    people = {
        "recipient": {"name": recipient[0], "email": recipient[1]},
        "sender": {"user_id": "u-123", "name": "Dr. Alice Smith", "email": "alice@demo.example"},
    }
    later: list[tuple[str, dict[str, Any]]] = [
        ("share.accepted", {"share_id": share_id, "method": "external_link"}),
        (
            "share.link.issued",
            {
                "share_id": share_id,
                "link_id": "lnk_" + "b" * 32,
                "token_fingerprint": "sha256:" + "c" * 32,
                "sealed_link": "gAAAAABn-sealed-link-" + share_id,
                "expires_at": "2026-11-23T09:00:00+00:00",
                **people,
                "organisation": "Demo Hospital",
                "message": None,
                "locale": "en-CA",
            },
        ),
        (
            "share.notification.sent",
            {
                "share_id": share_id,
                "channel": "email",
                "message_id": f"<{share_id}.link@blume-share.example>",
                "recipient_email": recipient[1],
                "accepted_at": "2026-11-20T09:05:00+00:00",
            },
        ),
        ("share.completed", {"share_id": share_id, "method": "external_link"}),
    ]
    if accessed:
        later.append(
            (
                "share.link.accessed",
                {
                    "share_id": share_id,
                    "link_id": "lnk_" + "b" * 32,
                    "auth_method": "none",
                    "use_number": 1,
                    "client": {"client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0"},
                },
            )
        )
    return [request] + [
        make_event(event_type, data, tenant=tenant, correlation_id=correlation)
        for event_type, data in later
    ]


@pytest.fixture
def request_body() -> Any:
    """``request_data``: a study.send.requested body with the given patient and recipient."""
    return request_data


@pytest.fixture
def life(make_event: EventFactory) -> Any:
    """``share_life`` bound to this test's event factory."""

    def events(**options: Any) -> list[RawEvent]:
        return share_life(make_event, **options)

    return events
