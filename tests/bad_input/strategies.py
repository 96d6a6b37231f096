"""Hypothesis strategies around the contract: values just inside and just outside it.

The JSON Schema of ``study.send.requested`` (``contracts/schemas``, generated from the
pydantic models) names every attribute and field with its type, lengths, pattern, bounds
and requiredness. ``mutations()`` picks a path in it and a value around that path's
constraints (the longest valid string and one longer, the empty string, a pattern broken,
another JSON type, deletion, an extra key), so examples stay near the boundary instead of
being random bytes. ``amqp_properties()`` does the same for content type, encoding and
headers.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from blume_contracts.artefacts import SCHEMA_DIR
from hypothesis import strategies as st

from tests.bad_input.messages import MISSING, REQUEST_TYPE, example, with_path

JSON_TYPES: Final = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
    "null": type(None),
}
OTHER_TYPES: Final[tuple[Any, ...]] = (None, 0, -1, 1.5, True, "", "x", [], ["x"], {}, {"x": 1})


@dataclass(frozen=True, slots=True)
class Field:
    """One place in the request: its dotted path and the schema constraining it."""

    path: str
    schema: dict[str, Any]
    required: bool


@cache
def request_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / f"{REQUEST_TYPE}.json").read_text())
    return schema


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return _resolve(request_schema()["$defs"][name])
    if "anyOf" in node:  # Optional[X]: constrain by X, the null branch is just allowed
        branches = [_resolve(b) for b in node["anyOf"] if b.get("type") != "null"]
        return {**branches[0], "nullable": True}
    return node


def fields(node: dict[str, Any] | None = None, prefix: str = "") -> Iterator[Field]:
    """Every attribute and data field of the request, depth first."""
    node = _resolve(node or request_schema())
    required = set(node.get("required", ()))
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        resolved = _resolve(child)
        yield Field(path, resolved, name in required)
        if resolved.get("type") == "object":
            yield from fields(resolved, f"{path}.")


def _strings_around(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    options: list[st.SearchStrategy[Any]] = [
        st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zl", "Zp"]), min_size=1),
        st.text(min_size=1, max_size=40),
    ]
    if (longest := schema.get("maxLength")) is not None:
        options.append(st.sampled_from(["a" * longest, "a" * (longest + 1), "a" * 10_000]))
    if schema.get("minLength"):
        options.append(st.just(""))
    if pattern := schema.get("pattern"):
        options.append(st.from_regex(pattern, fullmatch=True).map(lambda text: text[:300]))
    if schema.get("format") in {"date", "date-time"}:
        options.append(st.dates().map(str) | st.datetimes().map(lambda d: d.isoformat()))
    if "const" in schema:
        options.append(st.just(str(schema["const"]).upper()))
    return st.one_of(options)


def _numbers_around(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    floor = schema.get("exclusiveMinimum", 0)
    return st.one_of(
        st.sampled_from([floor - 1, floor, floor + 1, 2**31, 2**63, 10**30]),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(min_value=0, max_value=10_000).map(str),
    )


def _arrays_around(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    most = schema.get("maxItems", 16)
    return st.one_of(
        st.sampled_from([["CT"] * most, ["CT"] * (most + 1), ["CT"] * 10_000]),
        st.lists(st.text(alphabet=string.ascii_letters, max_size=6), max_size=3),
    )


def values_around(field: Field) -> st.SearchStrategy[Any]:
    """Values near the field's constraints, and values of every other JSON type."""
    kind = field.schema.get("type")
    expected = JSON_TYPES.get(kind) if isinstance(kind, str) else None
    options: list[st.SearchStrategy[Any]] = [
        st.sampled_from([v for v in OTHER_TYPES if expected is None or type(v) is not expected]),
        st.just(MISSING),
    ]
    if kind == "string" or "enum" in field.schema:
        options.append(_strings_around(field.schema))
    if kind == "integer":
        options.append(_numbers_around(field.schema))
    if kind == "array":
        options.append(_arrays_around(field.schema))
    if kind == "object":
        options.append(st.just({"unexpected": "DOE^JANE"}))
    return st.one_of(options)


def _present_in_example(path: str) -> bool:
    """The field's parent exists in the pinned example (``patient_account`` does not)."""
    node: Any = example(REQUEST_TYPE)
    for key in path.split(".")[:-1]:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return isinstance(node, dict)


@st.composite
def mutations(draw: st.DrawFn, prefix: str = "") -> tuple[str, Any]:
    """One field under ``prefix`` (``data.`` for data only) and a value around it."""
    candidates = [
        f
        for f in fields()
        if f.path.startswith(prefix) and f.path != "data" and _present_in_example(f.path)
    ]
    field = draw(st.sampled_from(candidates))
    return field.path, draw(values_around(field))


def mutated_request(mutation: tuple[str, Any]) -> dict[str, Any]:
    """The pinned example request with one mutation applied (``MISSING`` deletes)."""
    path, value = mutation
    return with_path(example(REQUEST_TYPE), path, value)


def _header_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=300)
        | st.binary(max_size=64)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=8,
    )


HEADER_NAMES: Final = ("x-death", "x-blume-attempt", "x-blume-producer", "x-first-death-reason")


def amqp_headers() -> st.SearchStrategy[dict[str, Any]]:
    """Headers of any type AMQP carries, under our own names and random ones."""
    names = st.sampled_from(HEADER_NAMES) | st.text(min_size=1, max_size=20)
    return st.dictionaries(names, _header_values(), max_size=4)


CONTENT_TYPES: Final = (
    "application/json",
    "application/cloudevents+json",
    "Application/JSON",
    "application/json; charset=utf-8",
    "application/cloudevents+json;charset=UTF-8",
    "application/cloudevents-batch+json",
    "application/x-www-form-urlencoded",
    "text/json",
    "text/plain",
    "application/octet-stream",
)


def content_types() -> st.SearchStrategy[str | None]:
    return st.none() | st.sampled_from(CONTENT_TYPES) | st.text(max_size=40)


def content_encodings() -> st.SearchStrategy[str | None]:
    return st.none() | st.sampled_from(["identity", "gzip", "deflate", "br", ""]) | st.text()


def readable_media_type(content_type: str | None) -> bool:
    """The documented rule: either JSON media type, any case, parameters allowed."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type in {"application/json", "application/cloudevents+json"}


def plain_encoding(content_encoding: str | None) -> bool:
    return (content_encoding or "").strip().lower() in {"", "identity"}


TOKEN: Final = re.compile(r"[\x21-\x7e]{1,256}")
EVENT_TYPE: Final = re.compile(r"[a-z]+(\.[a-z_]+)+")


def is_lenient_cloudevent(document: Any) -> bool:
    """The corpus's rule: specversion 1.0, a usable dedupe key (id, source), an event type."""
    if not isinstance(document, dict):
        return False
    key_usable = all(
        isinstance(document.get(name), str) and TOKEN.fullmatch(document[name])
        for name in ("id", "source")
    )
    kind = document.get("type")
    return (
        document.get("specversion", "1.0") == "1.0"
        and key_usable
        and isinstance(kind, str)
        and len(kind) <= 128
        and EVENT_TYPE.fullmatch(kind) is not None
    )
