"""Reading share requests for ``blume-share send``: JSON, a JSON array, or JSON Lines.

Each item is either a whole CloudEvent (published as it is) or the bare
``study.send.requested`` data, which gets a fresh envelope (new id, correlation id = id).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from blume_contracts.envelope import RawEvent, now
from blume_contracts.events import ShareRevokeRequested
from blume_contracts.ids import share_id_for
from blume_contracts.serialisation import event_body
from blume_runtime.transport import OutgoingMessage
from pydantic import ValidationError

CLI_SOURCE = "/blume-share/cli"


class RequestFileError(ValueError):
    """The input is not JSON, or an item is not a CloudEvent or a request object."""


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    event: RawEvent
    share_id: str

    def message(self) -> OutgoingMessage:
        return OutgoingMessage(
            routing_key=self.event.type,
            body=event_body(self.event),
            message_id=self.event.id,
        )


def parse_requests(text: str) -> list[PreparedRequest]:
    items = _json_items(text)
    if not items:
        raise RequestFileError("no requests in the input")
    return [_prepare(item, position) for position, item in enumerate(items, start=1)]


def _json_items(text: str) -> list[Any]:
    stripped = text.strip()
    try:
        document = json.loads(stripped)
    except json.JSONDecodeError:
        items = []
        for number, line in enumerate(stripped.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise RequestFileError(
                    f"line {number}: not JSON ({error.msg} at column {error.colno})"
                ) from None
        return items
    return document if isinstance(document, list) else [document]


def _prepare(item: Any, position: int) -> PreparedRequest:
    if not isinstance(item, dict):
        raise RequestFileError(f"request {position}: expected a JSON object")
    if "specversion" in item:
        envelope = item
    else:
        event_id = str(uuid.uuid4())
        tenant = item.get("tenant_id")
        envelope = {
            "id": event_id,
            "source": CLI_SOURCE,
            "type": "study.send.requested",
            "time": now().isoformat(),
            "tenantid": tenant if isinstance(tenant, str) and tenant else "unknown",
            "correlationid": event_id,
            "data": item,
        }
    try:
        event = RawEvent.model_validate(envelope)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'envelope'}: {e['msg']}"
            for e in error.errors(include_input=False)[:5]
        )
        raise RequestFileError(f"request {position}: not a valid CloudEvent ({problems})") from None
    return PreparedRequest(event, share_id_for(event))


def revoke_request(
    share_id: str, tenant_id: str, correlation_id: str, requested_by: str, reason: str | None
) -> PreparedRequest:
    """A share.revoke.requested for a known share, in its tenant and correlation."""
    event = RawEvent(
        id=str(uuid.uuid4()),
        source=CLI_SOURCE,
        type="share.revoke.requested",
        time=now(),
        tenantid=tenant_id,
        correlationid=correlation_id,
        data=ShareRevokeRequested(
            share_id=share_id, requested_by=requested_by, reason=reason
        ).model_dump(mode="json"),
    )
    return PreparedRequest(event, share_id)
