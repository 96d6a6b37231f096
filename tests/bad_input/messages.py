"""Building blocks for the corpus: the pinned examples, and ways to break them.

Every case starts from a checked-in example (``contracts/examples``), so that it is broken
in exactly the way its name says and nowhere else.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, Final

from blume_contracts.artefacts import EXAMPLES_DIR

REQUEST_TYPE: Final = "study.send.requested"


class _Missing:
    """Put in place of a value to delete the key instead."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

PHI_VALUES: Final = (
    "DOE^JANE",
    "MRN-0001",
    "1980-01-02",
    "ACC-2026-0001",
    "1.2.840.113619.2.55.3.604688119.868.1234567890.123",
    "CT CHEST W CONTRAST",
    "bob.jones@clinic.example",
    "alice@demo-hospital.example",
    "jane.doe@mail.example",
    "Please review before Friday",
)
"""Values from the examples that are PHI: no log line may ever hold one."""


def example(event_type: str) -> dict[str, Any]:
    """A fresh copy of the checked-in example event of a type."""
    document: dict[str, Any] = json.loads((EXAMPLES_DIR / f"{event_type}.json").read_text())
    return document


def event_id(tag: str, name: str) -> str:
    return f"bad-{tag}-{name}" if tag else f"bad-{name}"


def correlation_id(tag: str, name: str) -> str:
    return f"corr-{event_id(tag, name)}"


def with_path(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with the dotted ``path`` set to ``value`` (or removed)."""
    changed = copy.deepcopy(document)
    *parents, last = path.split(".")
    target = changed
    for key in parents:
        target = target[key]
    if value is MISSING:
        target.pop(last, None)
    else:
        target[last] = value
    return changed


def envelope(
    tag: str,
    name: str,
    event_type: str = REQUEST_TYPE,
    data: dict[str, Any] | None = None,
    **attributes: Any,
) -> dict[str, Any]:
    """The example of ``event_type`` with a case-specific id and correlation id, its data
    replaced by ``data`` if given and its attributes overridden (``MISSING`` deletes)."""
    document = example(event_type)
    document["id"] = event_id(tag, name)
    document["correlationid"] = correlation_id(tag, name)
    if data is not None:
        document["data"] = data
    for key, value in attributes.items():
        if value is MISSING:
            document.pop(key, None)
        else:
            document[key] = value
    return document


def request_data(changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The example request's data with changes at dotted paths (``{"recipient.email": …}``)."""
    data: dict[str, Any] = example(REQUEST_TYPE)["data"]
    for path, value in (changes or {}).items():
        data = with_path(data, path, value)
    return data


def encode(document: Any) -> bytes:
    """JSON as upstream would send it; non-finite floats come out as NaN/Infinity."""
    return json.dumps(document).encode()


def broken_request_body(tag: str, name: str, **attributes: Any) -> bytes:
    """A readable request whose recipient address is invalid: the carrier for transport and
    header cases, answered ``invalid_recipient_email`` once the message can be read."""
    data = request_data({"recipient.email": CARRIER_BAD_EMAIL})
    return encode(envelope(tag, name, data=data, **attributes))


CARRIER_BAD_EMAIL: Final = "bob.jones@@clinic..example"
CARRIER_REASON: Final = "invalid_recipient_email"
