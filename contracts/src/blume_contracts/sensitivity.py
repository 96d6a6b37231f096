"""Field sensitivity markings.

A field is marked once, in its contract model; the marking lands in the JSON Schema as
``x-sensitivity`` and drives both log redaction and how the audit store keeps the field.

- ``phi``: protected health information or personal contact details. Never logged; kept
  in the audit store, which is the compliance record.
- ``secret``: a credential (a link token or anything that unlocks one). Never logged and
  never stored: the audit store keeps a fingerprint only.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, Field

SENSITIVITY_KEY: Final = "x-sensitivity"


class Sensitivity(StrEnum):
    PHI = "phi"
    SECRET = "secret"  # noqa: S105 - a marking, not a credential


def phi(**kwargs: Any) -> Any:
    """A pydantic ``Field`` marked as PHI."""
    return Field(json_schema_extra={SENSITIVITY_KEY: Sensitivity.PHI.value}, **kwargs)


def secret(**kwargs: Any) -> Any:
    """A pydantic ``Field`` marked as secret."""
    return Field(json_schema_extra={SENSITIVITY_KEY: Sensitivity.SECRET.value}, **kwargs)


def field_sensitivity(model: type[BaseModel], name: str) -> Sensitivity | None:
    extra = model.model_fields[name].json_schema_extra
    if isinstance(extra, dict) and SENSITIVITY_KEY in extra:
        return Sensitivity(str(extra[SENSITIVITY_KEY]))
    return None


def fingerprint(value: str) -> str:
    """A stable, non-reversible reference to a secret value (for high-entropy secrets)."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:32]


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_nested_models(arg))
    return found


def sensitive_field_names(models: list[type[BaseModel]]) -> dict[str, Sensitivity]:
    """Every field name marked in ``models`` (recursively), with its marking.

    Log redaction works on key names, so a name marked anywhere is redacted everywhere.
    """
    names: dict[str, Sensitivity] = {}
    seen: set[type[BaseModel]] = set()
    stack = list(models)
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            marking = field_sensitivity(model, name)
            if marking is not None and names.get(name) is not Sensitivity.SECRET:
                names[name] = marking
            stack.extend(_nested_models(info.annotation))
    return names


def protect_secrets(data: Any, names: dict[str, Sensitivity]) -> Any:
    """``data`` with the value of every key marked secret in ``names`` replaced by its fingerprint.

    Works on plain JSON data, so it also protects events whose data failed validation.
    """
    if isinstance(data, dict):
        return {
            key: fingerprint(str(value))
            if names.get(key) is Sensitivity.SECRET and value is not None
            else protect_secrets(value, names)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [protect_secrets(item, names) for item in data]
    return data
