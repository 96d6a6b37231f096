"""Generated inputs around the contract, through the dispatcher's and the audit sink's
workers: whatever the envelope, data, content type, encoding, headers or bytes, each
delivery is settled once, as the documented rules say, with one log line.

The oracles are the contract's own models (is the envelope a CloudEvent, does the data
validate) and the corpus's documented rules; never the code under test.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from blume_contracts.envelope import RawEvent
from blume_contracts.events import RejectionReason, StudySendRequested
from blume_runtime.testing import FakeDelivery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.bad_input.corpus import INVALID_ENVELOPE
from tests.bad_input.harness import (
    Observed,
    WorkerUnderTest,
    answer_types,
    outcome_of,
    problems_with_logs,
)
from tests.bad_input.messages import (
    CARRIER_REASON,
    PHI_VALUES,
    REQUEST_TYPE,
    broken_request_body,
    encode,
)
from tests.bad_input.strategies import (
    amqp_headers,
    content_encodings,
    content_types,
    is_lenient_cloudevent,
    mutated_request,
    mutations,
    plain_encoding,
    readable_media_type,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

# One database and worker serve every example: each example has its own dedupe key.
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
POLICY_REASONS = {"tenant_mismatch", "unknown_tenant", "expiry_exceeds_policy"}


def _with_fresh_key(document: dict[str, Any], mutated: str) -> dict[str, Any]:
    """A dedupe key (source, id) no other example has, keeping whatever was mutated."""
    fresh = uuid.uuid4().hex
    if mutated == "id":
        document["source"] = f"/hypothesis/{fresh}"
    else:
        document["id"] = f"hyp-{fresh}"
    if mutated != "correlationid":
        document["correlationid"] = f"corr-{fresh}"
    return document


def _request_delivery(mutation: tuple[str, Any]) -> tuple[dict[str, Any], FakeDelivery]:
    document = _with_fresh_key(mutated_request(mutation), mutation[0])
    body = encode(document)
    return document, FakeDelivery(
        body, message_id=str(document.get("id")), routing_key="study.send.requested"
    )


def _strict(document: dict[str, Any]) -> bool:
    try:
        RawEvent.model_validate(document)
    except ValidationError:
        return False
    return True


def _data_error_fields(data: Any) -> set[str] | None:
    """Where the data breaks the contract ("" for the model as a whole), or None if valid."""
    try:
        StudySendRequested.model_validate(data)
    except ValidationError as error:
        return {".".join(map(str, e["loc"])) for e in error.errors()}
    return None


def _answer(observed: Observed) -> str:
    types = answer_types(observed)
    if observed.delivery.settlement == "ack" and "share.accepted" in types:
        return "accepted" if "share.rejected" not in types else "accepted and rejected"
    return outcome_of(observed)


def _assert_answer_fits(
    document: dict[str, Any], observed: Observed, mutation: tuple[str, Any]
) -> None:
    answer = _answer(observed)
    if not is_lenient_cloudevent(document):
        assert answer == "dead_lettered(malformed)"
    elif document["type"] != REQUEST_TYPE:
        # Not a request: another type, from no verified producer.
        assert answer in {"dead_lettered(untrusted_producer)", "dead_lettered(malformed)"}
    elif not _strict(document):
        owed = {f"rejected({INVALID_ENVELOPE})"}
        if "data" not in document:
            owed.add("rejected(malformed_request)")
        assert answer in owed
    elif (problems := _data_error_fields(document["data"])) is None:
        assert answer == "accepted" or answer in {f"rejected({r})" for r in POLICY_REASONS}
    else:
        assert answer.startswith("rejected("), answer
        [rejection] = observed.of_type("share.rejected")
        assert rejection["data"]["reason"] in {r.value for r in RejectionReason} - {
            INVALID_ENVELOPE
        }
        field = rejection["data"].get("field")
        assert "" in problems or field in {p.removeprefix("data.") for p in problems}
        _, value = mutation
        if isinstance(value, str) and len(value) >= 12:
            assert value not in rejection["data"]["message"]


@given(mutation=mutations())
@EXAMPLES
async def test_dispatcher_answers_every_mutated_request_by_the_rules(
    dispatcher: WorkerUnderTest, mutation: tuple[str, Any]
) -> None:
    """One envelope attribute or data field of the pinned request set to a value around its
    constraints (or removed): malformed if not even a lenient CloudEvent, invalid_envelope
    if only a lenient one, else the data's reason code or acceptance; one settled line."""
    document, delivery = _request_delivery(mutation)
    observed = await dispatcher.deliver(delivery)
    assert observed.escaped is None
    _assert_answer_fits(document, observed, mutation)
    assert problems_with_logs(observed, list(PHI_VALUES)) == []


@given(mutation=mutations())
@EXAMPLES
async def test_audit_sink_records_or_refuses_every_mutated_request(
    audit_sink: WorkerUnderTest, mutation: tuple[str, Any]
) -> None:
    """The audit sink records every strictly valid request, broken data included, refuses
    another type from the upstream client (no registered producer of it), dead-letters what
    is not even a lenient CloudEvent, and logs one settled line for each."""
    document, delivery = _request_delivery(mutation)
    observed = await audit_sink.deliver(delivery)
    outcome = outcome_of(observed)
    if is_lenient_cloudevent(document) and document["type"] != REQUEST_TYPE:
        assert outcome == "dead_lettered(untrusted_producer)"
    elif _strict(document):
        assert outcome == "acknowledged"
    elif is_lenient_cloudevent(document):
        assert outcome in {"acknowledged", "dead_lettered(malformed)"}
    else:
        assert outcome == "dead_lettered(malformed)"
    assert problems_with_logs(observed, list(PHI_VALUES)) == []


@given(
    content_type=content_types(),
    content_encoding=content_encodings(),
    headers=amqp_headers(),
    message_id=st.none() | st.text(max_size=255),
)
@EXAMPLES
async def test_dispatcher_reads_only_plain_json_and_ignores_headers(
    dispatcher: WorkerUnderTest,
    content_type: str | None,
    content_encoding: str | None,
    headers: dict[str, Any],
    message_id: str | None,
) -> None:
    """A readable request with any content type, encoding, headers and message id: answered
    by its data when its media type is JSON and it is not encoded, else malformed."""
    name = uuid.uuid4().hex
    delivery = FakeDelivery(
        broken_request_body("hypothesis", name),
        message_id=message_id,
        routing_key="study.send.requested",
        content_type=content_type,
        content_encoding=content_encoding,
        headers=headers,
    )
    observed = await dispatcher.deliver(delivery)
    readable = readable_media_type(content_type) and plain_encoding(content_encoding)
    owed = f"rejected({CARRIER_REASON})" if readable else "dead_lettered(malformed)"
    assert outcome_of(observed) == owed
    assert problems_with_logs(observed, list(PHI_VALUES)) == []


@given(body=st.binary(max_size=2048) | st.text(max_size=512).map(str.encode))
@EXAMPLES
async def test_dispatcher_dead_letters_arbitrary_bytes(
    dispatcher: WorkerUnderTest, body: bytes
) -> None:
    """Arbitrary bytes labelled as JSON are dead-lettered as malformed, with one settled
    line that does not hold them."""
    observed = await dispatcher.deliver(
        FakeDelivery(body, routing_key="study.send.requested", content_type="application/json")
    )
    assert outcome_of(observed) == "dead_lettered(malformed)"
    assert problems_with_logs(observed, list(PHI_VALUES)) == []
