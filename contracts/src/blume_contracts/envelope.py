"""The CloudEvents 1.0 envelope every message on ``blume.share`` travels in (structured mode)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    TypeAdapter,
    WrapValidator,
    model_serializer,
)

EXCHANGE: Final = "blume.share"
CONTENT_TYPE: Final = "application/cloudevents+json"

DataT = TypeVar("DataT")

# Printable, no whitespace control characters: these values end up in AMQP headers and logs.
Token = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")]
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z]+(\.[a-z_]+)+$", max_length=128)]


# W3C trace context, version 00: a trace id and a parent span id that are not all zeros.
def _ids_not_all_zeros(value: str) -> str:
    _version, trace_id, parent_id, _flags = value.split("-")
    if not trace_id.strip("0") or not parent_id.strip("0"):
        raise ValueError("a trace id or parent id of all zeros is invalid")
    return value


TraceParent = Annotated[
    str,
    StringConstraints(pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$", max_length=55),
    AfterValidator(_ids_not_all_zeros),
]


def _or_none(value: Any, handler: Any) -> Any:
    try:
        return handler(value)
    except ValueError:
        return None


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvent with the Blume extension attributes ``tenantid`` and ``correlationid``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: Token = Field(description="Unique per source; (source, id) is the dedupe key.")
    source: Token = Field(description="URI-reference of the producer, e.g. /omegaai/send-drawer.")
    type: EventType
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    tenantid: Token
    correlationid: Token = Field(
        description="Id of the originating request, carried unchanged down the chain."
    )
    data: DataT
    traceparent: Annotated[TraceParent | None, WrapValidator(_or_none)] = Field(
        default=None,
        description=(
            "W3C trace context (the CloudEvents distributed-tracing extension). An invalid "
            "value is dropped, as W3C asks of a receiver, never a reason to refuse the event."
        ),
    )

    @model_serializer(mode="wrap")
    def _absent_extensions_omitted(self, handler: SerializerFunctionWrapHandler) -> Any:
        """CloudEvents has no null attributes: an absent trace context is left out."""
        dumped = handler(self)
        if isinstance(dumped, dict) and dumped.get("traceparent") is None:
            dumped.pop("traceparent", None)
        return dumped


RawEvent = CloudEvent[Any]

UNKNOWN_TENANT: Final = "_unknown"
"""The tenant of an answer to a request whose own ``tenantid`` is missing or unusable."""


class LenientEnvelope(BaseModel):
    """The least of a CloudEvent we can act on: a dedupe key and a type.

    A message that passes this but not ``CloudEvent`` still has an identity (``source`` and
    ``id``) and a type, so a request can be answered instead of dead-lettered.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    # Defaulted as in ``CloudEvent``: whatever the strict envelope accepts, this accepts.
    specversion: Literal["1.0"] = "1.0"
    id: Token
    source: Token
    type: EventType


def usable_envelope(document: dict[str, Any], lenient: LenientEnvelope) -> RawEvent:
    """A valid envelope for a leniently parsed event, by one documented rule.

    ``tenantid``, ``correlationid`` and ``traceparent`` are kept when valid; otherwise the
    tenant is ``_unknown`` and the correlation id is the event's own id (which a requester
    knows, having chosen it). ``time`` is kept when it is an aware timestamp, else now.
    ``data`` is carried as it came: the consumer validates it.
    """
    valid = _ATTRIBUTES.validate_python(
        {name: document.get(name) for name in ("tenantid", "correlationid", "time", "traceparent")}
    )
    return RawEvent(
        id=lenient.id,
        source=lenient.source,
        type=lenient.type,
        time=valid.time or now(),
        tenantid=valid.tenantid or UNKNOWN_TENANT,
        correlationid=valid.correlationid or lenient.id,
        data=document.get("data"),
        traceparent=valid.traceparent,
    )


class _UsableAttributes(BaseModel):
    """Each attribute if it is valid, else None (never an error)."""

    tenantid: Annotated[Token | None, WrapValidator(_or_none)] = None
    correlationid: Annotated[Token | None, WrapValidator(_or_none)] = None
    time: Annotated[AwareDatetime | None, WrapValidator(_or_none)] = None
    traceparent: Annotated[TraceParent | None, WrapValidator(_or_none)] = None


_ATTRIBUTES: Final = TypeAdapter(_UsableAttributes)


def now() -> datetime:
    return datetime.now(UTC)
