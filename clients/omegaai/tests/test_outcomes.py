"""Reading outcome events: every contract example parses into its model, and whatever else a
delivery holds is refused with ``UnreadableOutcomeError`` (never another exception, which
would stall the consumer), without echoing the body."""

from __future__ import annotations

import json
from typing import Any

import pytest
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.registry import EVENTS
from blume_share_client import OUTCOME_MODELS
from blume_share_client.outcomes import UnreadableOutcomeError, parse_outcome
from hypothesis import given
from hypothesis import strategies as st

SENTINEL = "SENTINEL-PHI"


def example(event_type: str) -> dict[str, Any]:
    return dict(json.loads((EXAMPLES_DIR / f"{event_type}.json").read_text()))


def test_the_outcome_types_are_the_ones_upstream_consumes() -> None:
    """The consumer binds exactly the types the registry says upstream consumes."""
    upstream = {name for name, spec in EVENTS.items() if "omegaai" in spec.consumers}
    assert set(OUTCOME_MODELS) == upstream
    for event_type, model in OUTCOME_MODELS.items():
        assert EVENTS[event_type].model is model


@pytest.mark.parametrize("event_type", sorted(OUTCOME_MODELS))
def test_each_outcome_example_parses_into_its_contract_model(event_type: str) -> None:
    """The envelope is kept (id, correlationid, tenantid); data is the type's model."""
    event = example(event_type)
    outcome = parse_outcome(json.dumps(event).encode())
    assert isinstance(outcome.data, OUTCOME_MODELS[event_type])
    assert (outcome.id, outcome.type, outcome.correlationid, outcome.tenantid) == (
        event["id"],
        event_type,
        event["correlationid"],
        event["tenantid"],
    )
    assert outcome.data.share_id == event["data"]["share_id"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe\x00",
        b"[1, 2, 3]",
        b'{"specversion": "1.0"}',
        b"[" * 10_000 + b"]" * 10_000,
        json.dumps(example("share.link.opened")).encode(),
        json.dumps({**example("share.accepted"), "data": {"share_id": SENTINEL}}).encode(),
        json.dumps({**example("share.failed"), "type": f"share.{SENTINEL.lower()}"}).encode(),
        json.dumps({**example("share.revoked"), "time": "not a time"}).encode(),
    ],
)
def test_what_is_not_an_outcome_is_refused(body: bytes) -> None:
    """Not JSON, not an object, not a CloudEvent, another type, broken data or envelope."""
    with pytest.raises(UnreadableOutcomeError) as raised:
        parse_outcome(body)
    assert SENTINEL not in str(raised.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
)


FIELDS = sorted(
    {*example("share.accepted")}
    | {name for model in OUTCOME_MODELS.values() for name in model.model_fields}
)


@given(st.binary())
def test_any_bytes_parse_or_are_refused(body: bytes) -> None:
    """No byte string makes parse_outcome raise anything but UnreadableOutcomeError."""
    try:
        outcome = parse_outcome(body)
    except UnreadableOutcomeError:
        return
    assert outcome.type in OUTCOME_MODELS


@given(
    st.sampled_from(sorted(OUTCOME_MODELS)),
    st.booleans(),
    st.sampled_from(FIELDS) | st.text(),
    JSON,
)
def test_any_value_in_any_field_parses_or_is_refused(
    event_type: str, in_data: bool, field: str, value: Any
) -> None:
    """An outcome example with any field of its envelope or data replaced (or added) by any
    JSON value either still parses (into the model of the type it then names) or is
    refused; nothing else escapes."""
    event = example(event_type)
    (event["data"] if in_data else event)[field] = value
    try:
        outcome = parse_outcome(json.dumps(event).encode())
    except UnreadableOutcomeError:
        return
    assert isinstance(outcome.data, OUTCOME_MODELS[outcome.type])
