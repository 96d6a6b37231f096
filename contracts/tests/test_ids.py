"""Identifiers derived by rule (``blume_contracts.ids``)."""

from __future__ import annotations

import json

from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.envelope import RawEvent
from blume_contracts.ids import share_id_for

EXAMPLE = json.loads((EXAMPLES_DIR / "study.send.requested.json").read_text())


def _request(source: str = "/omegaai", event_id: str = "e-1", **changes: str) -> RawEvent:
    return RawEvent.model_validate({**EXAMPLE, "source": source, "id": event_id, **changes})


def test_share_id_is_deterministic_per_request() -> None:
    """The same (source, id) always yields the same share id; another id another share."""
    assert share_id_for(_request()) == share_id_for(_request())
    assert share_id_for(_request()) != share_id_for(_request(event_id="e-2"))
    assert share_id_for(_request()) != share_id_for(_request(source="/other"))


def test_share_id_depends_on_the_dedupe_key_alone() -> None:
    """Tenant, correlation id and time do not change it: a redelivery makes the same share."""
    assert share_id_for(_request(correlationid="other", tenantid="other")) == share_id_for(
        _request()
    )


def test_a_source_and_id_cannot_be_shifted_into_each_other() -> None:
    """("/a", "b/c") and ("/a/b", "c") are different requests and different shares."""
    assert share_id_for(_request("/a", "b/c")) != share_id_for(_request("/a/b", "c"))
