"""Blume Share event contracts."""

from blume_contracts.envelope import CONTENT_TYPE, EXCHANGE, CloudEvent, RawEvent
from blume_contracts.registry import EVENTS, EventSpec, spec_for

__all__ = ["CONTENT_TYPE", "EVENTS", "EXCHANGE", "CloudEvent", "EventSpec", "RawEvent", "spec_for"]
