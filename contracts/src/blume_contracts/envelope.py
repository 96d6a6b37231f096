"""The CloudEvents 1.0 envelope every message on ``blume.share`` travels in (structured mode)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

EXCHANGE: Final = "blume.share"
CONTENT_TYPE: Final = "application/cloudevents+json"

DataT = TypeVar("DataT")

# Printable, no whitespace control characters: these values end up in AMQP headers and logs.
Token = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")]


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvent with the Blume extension attributes ``tenantid`` and ``correlationid``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: Token = Field(description="Unique per source; (source, id) is the dedupe key.")
    source: Token = Field(description="URI-reference of the producer, e.g. /omegaai/send-drawer.")
    type: Annotated[str, StringConstraints(pattern=r"^[a-z]+(\.[a-z_]+)+$", max_length=128)]
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    tenantid: Token
    correlationid: Token = Field(
        description="Id of the originating request, carried unchanged down the chain."
    )
    data: DataT


RawEvent = CloudEvent[Any]


def new_event_id() -> str:
    return str(uuid.uuid4())


def now() -> datetime:
    return datetime.now(UTC)
