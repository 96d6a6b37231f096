"""Any delivery at all (generated: bytes, JSON of any shape, envelopes near the contract,
any content type, encoding, producer and attempt number) is settled exactly once, with one
line, and nothing escapes the worker."""

from __future__ import annotations

import asyncio
import json

import pytest
from blume_runtime.db import Database
from blume_runtime.testing import FakeDelivery
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from runtime.tests.pipeline_support import Probe, probe_worker, runtime_tables, settings_for

_CONTENT_TYPES = st.sampled_from(
    [
        None,
        "",
        "application/json",
        "application/cloudevents+json; charset=utf-8",
        "APPLICATION/JSON",
        "text/plain",
        "application/json\x00",
    ]
)
_ENCODINGS = st.sampled_from([None, "", "identity", "gzip", "deflate", "x" * 300])
_BODIES = st.one_of(
    st.binary(max_size=600),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=40),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=12), children, max_size=4)
        ),
        max_leaves=30,
    ).map(lambda value: json.dumps(value).encode()),
    st.dictionaries(
        st.sampled_from(["specversion", "id", "source", "type", "tenantid", "time", "data"]),
        st.none() | st.text(max_size=300) | st.integers(),
    ).map(lambda value: json.dumps(value).encode()),
)


@settings(max_examples=150, deadline=None)
@given(
    body=_BODIES,
    content_type=_CONTENT_TYPES,
    encoding=_ENCODINGS,
    producer=st.sampled_from([None, "blume-share", "mallory"]),
    attempt=st.integers(min_value=1, max_value=10**6),
)
def test_any_delivery_is_settled_exactly_once_with_one_line(
    tmp_path_factory: pytest.TempPathFactory,
    body: bytes,
    content_type: str | None,
    encoding: str | None,
    producer: str | None,
    attempt: int,
) -> None:
    """Whatever the body, content type, encoding, producer or attempt number: one
    settlement, one ``delivery settled`` event, and no exception out of the worker."""
    path = tmp_path_factory.mktemp("any")

    async def deliver() -> FakeDelivery:
        db = Database(f"sqlite:///{path / 'runtime.db'}")
        try:
            await runtime_tables(db)
            worker, _ = probe_worker(db, Probe(), settings_for(path))
            delivery = FakeDelivery(
                body,
                content_type=content_type,
                content_encoding=encoding,
                producer=producer,
                attempt=attempt,
            )
            await worker(delivery)
            return delivery
        finally:
            await db.dispose()

    with capture_logs() as logged:
        delivery = asyncio.run(deliver())
    assert delivery.settlement in {"ack", "retry", "dead_letter"}
    assert [entry["event"] for entry in logged] == ["delivery settled"]
