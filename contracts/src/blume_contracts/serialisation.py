"""The one way the product writes JSON: events on the wire, and JSON it stores or hashes.

- ``event_body``: an event as it travels and waits in an outbox (handlers, the gateway,
  dead-letter replays, the CLI, the OmegaAI client and the test fakes), so a body written by
  one is byte-for-byte what another writes;
- ``compact_json``: a value as stored (the audit sealer's staged entries), no whitespace;
- ``canonical_json``: the same, keys sorted, for what is hashed or signed (the audit chain,
  its checkpoints), where one value must have one spelling.

Each keeps UTF-8 as is (no ``\\u`` escapes): what is stored or hashed reads as it was sent.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel


def event_body(event: BaseModel) -> bytes:
    """An event as it travels and waits in an outbox: compact JSON in UTF-8."""
    return event.model_dump_json().encode()


def compact_json(value: Any) -> str:
    """``value`` as JSON text without whitespace, keys in their own order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """The one JSON spelling of ``value``: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
