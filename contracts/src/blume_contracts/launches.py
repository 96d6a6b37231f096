"""The sender launch API (``POST /api/v1/launches``): the body an upstream backend sends and
the answer it gets. Shared by the upstream client library and the gateway that serves it.

The body carries PHI (the study and its patient): it travels only server to server, over
TLS, and is never logged or put in a URL. The answer's ``launch_url`` holds an opaque id.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, StringConstraints

from blume_contracts.events import (
    Contract,
    Identifier,
    PatientAccountRef,
    Sender,
    Study,
)
from blume_contracts.locales import Locale

LAUNCHES_PATH = "/api/v1/launches"


class LaunchRequest(Contract):
    """Who shares which study, prefilled on the sender's page (the study as in
    ``study.send.requested``, patient included)."""

    tenant_id: Identifier
    sender: Sender
    study: Study
    patient_account: PatientAccountRef | None = None
    locale: Locale = "en-CA"


class LaunchCreated(BaseModel):
    """``201``: the URL to open in the sender's browser, once, before ``expires_at``.

    Unknown fields are ignored, so the server may add some without breaking clients.
    """

    model_config = ConfigDict(frozen=True)

    launch_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2048)]
    expires_at: AwareDatetime
