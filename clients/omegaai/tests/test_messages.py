"""What ``send`` and ``revoke`` publish, built and validated before any connection is made."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.events import StudySendRequested
from blume_contracts.ids import share_id_for
from blume_share_client import InvalidRequestError, ShareClient
from blume_share_client.messages import revoke_event, send_event

EXAMPLE: dict[str, Any] = json.loads((EXAMPLES_DIR / "study.send.requested.json").read_text())
SOURCE = "/omegaai/test"
SENTINEL = "SENTINEL-VALUE"


def request_data(**changes: Any) -> dict[str, Any]:
    """The example request's data with dotted-path changes."""
    data: dict[str, Any] = json.loads(json.dumps(EXAMPLE["data"]))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = data
        for parent in parents:
            target = target[parent]
        target[last] = value
    return data


def whole_event(**envelope: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(EXAMPLE)), **envelope}


def test_bare_data_gets_a_fresh_envelope() -> None:
    """id is a new UUID, source the client's, time now, tenantid the request's tenant,
    correlationid the event's own id, type study.send.requested."""
    before = datetime.now(UTC)
    event = send_event(request_data(), source=SOURCE)
    assert uuid.UUID(event.id).version == 4
    assert event.source == SOURCE
    assert event.type == "study.send.requested"
    assert event.tenantid == EXAMPLE["data"]["tenant_id"]
    assert event.correlationid == event.id
    assert before <= event.time <= datetime.now(UTC) + timedelta(seconds=1)
    assert event.data == StudySendRequested.model_validate(EXAMPLE["data"])
    assert send_event(request_data(), source=SOURCE).id != event.id


def test_a_given_event_id_and_correlation_id_are_used() -> None:
    """The same event id makes the same share (a safe retry); the correlation id is kept."""
    first = send_event(request_data(), source=SOURCE, event_id="evt-1", correlation_id="omega-9")
    again = send_event(request_data(), source=SOURCE, event_id="evt-1")
    assert (first.id, first.correlationid) == ("evt-1", "omega-9")
    assert share_id_for(first) == share_id_for(again)
    assert share_id_for(first) != share_id_for(send_event(request_data(), source=SOURCE))


def test_a_model_instance_is_accepted_as_bare_data() -> None:
    """A StudySendRequested built by the caller is sent as its data."""
    model = StudySendRequested.model_validate(EXAMPLE["data"])
    assert send_event(model, source=SOURCE).data == model


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"recipient__email": f"{SENTINEL}@"}, "recipient.email"),
        ({"study__patient__name": f"DOE\x00{SENTINEL}"}, "study.patient.name"),
        ({"study__study_instance_uid": f"1.2.{SENTINEL}"}, "study.study_instance_uid"),
        ({"method": SENTINEL}, "method"),
        ({"locale": SENTINEL}, "locale"),
        ({"expires_in_hours": 0}, "expires_in_hours"),
        ({"message": SENTINEL * 300}, "message"),
        ({"tenant_id": f"{SENTINEL} x"}, "tenant_id"),
        ({"unexpected": SENTINEL}, "unexpected"),
    ],
)
def test_invalid_data_names_the_field_never_the_value(changes: dict[str, Any], field: str) -> None:
    """Nothing is built; the error lists the dotted field and does not echo what was in it."""
    with pytest.raises(InvalidRequestError) as raised:
        send_event(request_data(**changes), source=SOURCE)
    assert field in raised.value.fields
    assert SENTINEL not in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_a_request_without_its_audience_is_refused() -> None:
    """external_link needs a recipient, blume a patient_account (the model's own rule)."""
    data = request_data()
    del data["recipient"]
    with pytest.raises(InvalidRequestError):
        send_event(data, source=SOURCE)


def test_a_whole_cloudevent_keeps_its_envelope() -> None:
    """A valid CloudEvent is sent as it is: its id, source, correlation id and time."""
    event = send_event(whole_event(), source=SOURCE)
    assert (event.id, event.source, event.correlationid) == (
        EXAMPLE["id"],
        EXAMPLE["source"],
        EXAMPLE["correlationid"],
    )
    assert event.time == datetime.fromisoformat(EXAMPLE["time"])


def test_a_whole_cloudevent_keeps_its_trace_context() -> None:
    """A W3C traceparent travels with the request; a malformed one is dropped, as W3C asks."""
    traceparent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    assert send_event(whole_event(traceparent=traceparent), source=SOURCE).traceparent == (
        traceparent
    )
    assert send_event(whole_event(traceparent=SENTINEL), source=SOURCE).traceparent is None


@pytest.mark.parametrize(
    ("envelope", "field"),
    [
        ({"correlationid": None}, "correlationid"),
        ({"id": f"has space {SENTINEL}"}, "id"),
        ({"time": "2026-11-28T14:00:00"}, "time"),
        ({"specversion": "0.3"}, "specversion"),
        ({"type": "share.revoke.requested"}, "type"),
        ({"tenantid": "another-hospital"}, "tenantid"),
        ({"sampledrate": SENTINEL}, "sampledrate"),
    ],
)
def test_a_whole_cloudevent_is_validated_whole(envelope: dict[str, Any], field: str) -> None:
    """Envelope attributes, the type and the tenant's agreement with the data are checked."""
    with pytest.raises(InvalidRequestError) as raised:
        send_event(whole_event(**envelope), source=SOURCE)
    assert raised.value.fields == (field,)
    assert SENTINEL not in str(raised.value)


def test_the_data_of_a_whole_cloudevent_is_validated() -> None:
    """Its data is checked against the model, fields named under data."""
    event = whole_event()
    event["data"]["recipient"]["email"] = "nobody"
    with pytest.raises(InvalidRequestError) as raised:
        send_event(event, source=SOURCE)
    assert raised.value.fields == ("data.recipient.email",)


def test_a_cloudevent_cannot_be_given_another_id() -> None:
    """event_id and correlation_id are for bare data; a CloudEvent brings its own."""
    with pytest.raises(TypeError):
        send_event(whole_event(), source=SOURCE, event_id="other")


def test_a_revocation_is_validated_and_enveloped() -> None:
    """share.revoke.requested for the share, in the tenant given, with a fresh id."""
    share_id = f"shr_{uuid.uuid4().hex}"
    event = revoke_event(
        share_id,
        tenant_id="demo-hospital",
        requested_by="u-123",
        reason="sent to the wrong doctor",
        source=SOURCE,
        correlation_id="omega-1",
    )
    assert event.type == "share.revoke.requested"
    assert (event.tenantid, event.correlationid, event.source) == (
        "demo-hospital",
        "omega-1",
        SOURCE,
    )
    assert event.data.share_id == share_id
    assert event.data.requested_by == "u-123"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"share_id": "shr_not-hex"}, "share_id"),
        ({"requested_by": ""}, "requested_by"),
        ({"reason": "x" * 201}, "reason"),
        ({"tenant_id": "two words"}, "tenantid"),
    ],
)
def test_an_invalid_revocation_names_the_field(arguments: dict[str, Any], field: str) -> None:
    """A bad share id, requester, reason or tenant fails before anything is sent."""
    values: dict[str, Any] = {
        "share_id": f"shr_{uuid.uuid4().hex}",
        "tenant_id": "demo-hospital",
        "requested_by": "u-123",
        "reason": None,
        **arguments,
    }
    share_id = values.pop("share_id")
    with pytest.raises(InvalidRequestError) as raised:
        revoke_event(share_id, source=SOURCE, **values)
    assert raised.value.fields == (field,)


def test_the_client_refuses_a_source_the_envelope_would_not_carry() -> None:
    """A source with spaces or too long is refused at construction, before any connection."""
    for source in ("/omega ai", "", "/" + "x" * 256):
        with pytest.raises(ValueError, match="source"):
            ShareClient("amqp://nobody:nothing@127.0.0.1:1/", source=source)
