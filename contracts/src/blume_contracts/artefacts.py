"""Generate the checked-in contract artefacts: JSON Schemas and the AsyncAPI 3.0 document.

``python -m blume_contracts.artefacts`` rewrites them; a test fails when they are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from blume_contracts.envelope import CONTENT_TYPE, EXCHANGE, CloudEvent
from blume_contracts.registry import EVENTS, UPSTREAM

CONTRACTS_DIR = Path(__file__).resolve().parents[2]
SCHEMA_DIR = CONTRACTS_DIR / "schemas"
ASYNCAPI_FILE = CONTRACTS_DIR / "asyncapi.json"
EXAMPLES_DIR = CONTRACTS_DIR / "examples"


def event_schema(event_type: str) -> dict[str, Any]:
    spec = EVENTS[event_type]
    schema = CloudEvent[spec.model].model_json_schema()  # type: ignore[name-defined]
    schema["title"] = event_type
    schema["description"] = spec.summary
    schema["properties"]["type"]["const"] = event_type
    return schema


def asyncapi_document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event_type, spec in EVENTS.items():
        key = event_type.replace(".", "_")
        messages[key] = {
            "name": event_type,
            "title": event_type,
            "summary": spec.summary,
            "contentType": CONTENT_TYPE,
            "payload": {"$ref": f"schemas/{event_type}.json"},
            "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": "0.3.0"}},
            "x-producers": list(spec.producers),
            "x-consumers": list(spec.consumers),
            # Outside types are accepted from any publisher; others only from their producers.
            "x-outside": spec.outside,
        }
        channels[key] = {
            "address": event_type,
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {"name": EXCHANGE, "type": "topic", "durable": True},
                    "bindingVersion": "0.3.0",
                }
            },
        }
        for producer in spec.producers:
            operations[f"{producer}_sends_{key}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{key}"},
                "summary": f"{producer} publishes {event_type}",
            }
        for consumer in spec.consumers:
            if consumer == UPSTREAM:
                continue
            operations[f"{consumer}_receives_{key}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{key}"},
                "summary": f"{consumer} consumes {event_type} from queue blume.share.{consumer}",
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Blume Share events",
            "version": "1.0.0",
            "description": (
                "Events on the durable topic exchange blume.share. The routing key is the "
                "event type; every message is a persistent CloudEvent 1.0 in structured mode, "
                "its AMQP message_id equal to the CloudEvent id."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def rendered() -> dict[Path, str]:
    """Every artefact's path and its expected text."""
    files = {
        SCHEMA_DIR / f"{event_type}.json": _dump(event_schema(event_type)) for event_type in EVENTS
    }
    files[ASYNCAPI_FILE] = _dump(asyncapi_document())
    return files


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for path, text in rendered().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(CONTRACTS_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
