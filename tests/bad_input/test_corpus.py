"""The corpus itself: big enough, every case distinct, every expectation a real code."""

from __future__ import annotations

import contextlib
import json
from collections import Counter

from blume_contracts.events import RejectionReason
from blume_contracts.registry import EVENTS
from blume_runtime.transport import DeadLetterCause

from tests.bad_input.corpus import (
    AUDIT_SINK,
    INVALID_ENVELOPE,
    MAX_BODY_BYTES,
    Case,
    Producer,
    build_corpus,
)
from tests.bad_input.strategies import fields

CORPUS = build_corpus()


def test_corpus_has_at_least_sixty_cases_in_every_layer() -> None:
    """Issue 8 asks for at least 60 hostile messages over transport, envelope and data."""
    layers = Counter(case.layer for case in CORPUS)
    assert len(CORPUS) >= 60
    assert set(layers) == {"transport", "envelope", "data", "internal"}
    assert min(layers.values()) >= 10, layers


def test_case_names_and_bodies_are_unique() -> None:
    """A dead letter or an answer can be traced back to exactly one case by its body."""
    assert len({case.name for case in CORPUS}) == len(CORPUS)
    assert len({case.body for case in CORPUS}) == len(CORPUS)


def _event_ids(corpus: list[Case]) -> set[str]:
    ids = set()
    for case in corpus:
        with contextlib.suppress(ValueError, RecursionError):
            document = json.loads(case.body)
            if isinstance(document, dict) and isinstance(document.get("id"), str):
                ids.add(document["id"])
    ids.discard("")  # the empty-id case: never an event, so nothing to dedupe
    return ids


def test_tags_make_every_event_id_new() -> None:
    """Two corpora built with different tags share no event id: none dedupes the other
    (chaos publishes the corpus more than once)."""
    ids = _event_ids(CORPUS)
    assert len(ids) > len(CORPUS) / 2
    assert not _event_ids(build_corpus("again")) & ids


def test_every_expected_reason_is_a_rejection_reason() -> None:
    """Every reason the corpus expects is a code of the contract's ``RejectionReason``
    (``invalid_envelope`` included: issue 8 adds it for lenient-only envelopes)."""
    expected = {
        outcome.code
        for case in CORPUS
        for outcome in case.expect | case.audit
        if outcome.kind == "rejected"
    }
    assert INVALID_ENVELOPE in expected
    assert expected <= {reason.value for reason in RejectionReason}


def test_every_expected_cause_is_a_dead_letter_cause() -> None:
    """Dead letters are expected with the runtime's causes, and the corpus uses the three
    that bad input can earn."""
    causes = {
        outcome.code
        for case in CORPUS
        for outcome in case.expect | case.audit
        if outcome.kind == "dead_lettered"
    }
    assert causes == {"malformed", "contract", "untrusted_producer"}
    assert causes <= {cause.value for cause in DeadLetterCause}


def test_the_reported_cases_are_in_the_corpus() -> None:
    """Defect 1 (broken JSON as application/json), defect 4 (a 100-character tenantid over
    broken data) and defect 5 (a forged share.blume.published) are cases of their own."""
    by_name = {case.name: case for case in CORPUS}
    broken_json = [case for case in CORPUS if case.name.startswith("broken-json-")]
    assert broken_json
    assert all(case.content_type == "application/json" for case in broken_json)
    defect_4 = json.loads(by_name["tenantid-100-broken-data"].body)
    assert len(defect_4["tenantid"]) == 100
    forged = by_name["forged-blume-published-anonymous"]
    assert forged.routing_key == "share.blume.published"
    assert forged.producer is Producer.ANONYMOUS


def test_sizes_straddle_the_limit() -> None:
    """The size cases sit exactly at the limit, one byte over, and far over."""
    sizes = {case.name: len(case.body) for case in CORPUS if case.name.startswith("size-")}
    assert sizes["size-at-limit"] == MAX_BODY_BYTES
    assert sizes["size-one-over"] == MAX_BODY_BYTES + 1
    assert sizes["size-5m"] == 5 * 1024 * 1024


def test_internal_cases_route_to_their_consumers() -> None:
    """Internal cases use registered types as routing keys, so they reach real consumers:
    their types' workers, or the audit sink where no worker of ours binds the type."""
    internal = [case for case in CORPUS if case.layer == "internal"]
    assert all(case.routing_key in EVENTS for case in internal)
    assert all(case.receivers for case in internal)
    assert any(AUDIT_SINK not in case.receivers for case in internal)


def test_generated_mutations_reach_every_attribute_and_nested_field() -> None:
    """The hypothesis strategies draw from every envelope attribute and from data fields
    down to the patient, all read from the contract's JSON Schema."""
    paths = {field.path for field in fields()}
    attributes = {"specversion", "id", "source", "type", "time", "tenantid", "correlationid"}
    assert attributes | {"datacontenttype"} <= paths
    assert {"data.study.patient.mrn", "data.recipient.email", "data.expires_in_hours"} <= paths
