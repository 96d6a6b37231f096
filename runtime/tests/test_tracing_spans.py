"""Spans around a handled event: recorded with a provider, only the context carried without."""

from __future__ import annotations

import pytest
from blume_runtime import tracing
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

PARENT = tracing.derived_context("/omegaai/tenant-a", "evt-1")


def test_without_a_provider_the_events_context_is_current_and_carried_then_restored() -> None:
    """No provider: inside ``handling`` (and a ``span`` in it) the current context is the
    event's, so what is emitted carries its trace and span; outside, it is what it was."""
    assert not tracing.recording()
    before = trace.get_current_span().get_span_context()
    with tracing.handling("svc process share.accepted", PARENT, {"blume.service": "svc"}):
        assert trace.get_current_span().get_span_context() == PARENT
        with tracing.span("db transaction") as inner:
            assert inner.get_span_context() == PARENT
            assert tracing.current_traceparent() == tracing.traceparent_of(PARENT)
    assert trace.get_current_span().get_span_context() == before
    assert tracing.current_traceparent() is None


def test_without_a_provider_a_failing_handler_still_restores_the_context() -> None:
    """An exception raised inside ``handling`` goes through unchanged and the context is
    restored, as the no-op tracer's spans did."""
    with (
        pytest.raises(LookupError),
        tracing.handling("svc process share.accepted", PARENT, {}),
        tracing.span("db transaction"),
    ):
        raise LookupError
    assert tracing.current_traceparent() is None


def test_with_a_provider_the_handled_event_and_its_steps_are_recorded_spans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A provider set: a CONSUMER span, child of the event's context, with its attributes,
    and an INTERNAL child span for each step; emitted events carry the step's span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    # The runtime's tracer is OpenTelemetry's proxy, which keeps the first provider's
    # tracer for good: this test's own, so that no later test's spans come here.
    monkeypatch.setattr(tracing, "_TRACER", provider.get_tracer(tracing.TRACER_NAME))
    assert tracing.recording()
    with (
        tracing.handling("svc process share.accepted", PARENT, {"blume.service": "svc"}),
        tracing.span("db transaction") as step,
    ):
        assert tracing.current_traceparent() == tracing.traceparent_of(step.get_span_context())
    step_span, handled = exporter.get_finished_spans()
    assert (handled.name, handled.kind) == ("svc process share.accepted", trace.SpanKind.CONSUMER)
    assert handled.parent == PARENT
    assert handled.attributes == {"blume.service": "svc"}
    assert step_span.parent == handled.get_span_context()
    assert step_span.context.trace_id == PARENT.trace_id
