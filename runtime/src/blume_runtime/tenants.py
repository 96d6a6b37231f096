"""Tenant policy: per organisation, how long links live and how recipients authenticate.

Read by the dispatcher (expiry, display name) and the access gateway (authentication,
uses per link, the viewer). Secrets, such as an SSO client secret, are named here by the
environment variable that holds them, never written in the file.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Literal, Self

import yaml
from blume_contracts.display import DEFAULT_TIME_ZONE, time_zone
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
    model_validator,
)


class SsoPolicy(BaseModel):
    """The tenant's OpenID Connect identity provider for recipients."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: HttpUrl
    client_id: str = Field(min_length=1)
    client_secret_env: str = Field(
        pattern=r"^[A-Z][A-Z0-9_]*$",
        description="Name of the environment variable holding the client secret.",
    )
    allowed_domains: list[str] = Field(
        default_factory=list,
        description="Besides the invited address itself, sign-ins from these domains pass.",
    )
    trust_unverified_email: bool = Field(
        default=False,
        description=(
            "Accept an address the provider does not mark email_verified (only for a provider "
            "that issues addresses itself and omits the claim); an explicit false never passes."
        ),
    )

    def client_secret(self) -> str:
        secret = os.environ.get(self.client_secret_env)
        if not secret:
            raise PolicyError(f"{self.client_secret_env} is not set")
        return secret


RecipientAuth = Literal["none", "email_otp", "sso"]
RecipientAccess = Literal["view", "view_and_download"]
SummaryField = Literal["study_date", "modalities", "description", "patient_name"]


def _default_summary() -> list[SummaryField]:
    return ["study_date", "modalities", "description"]


_ENV_NAME = r"^[A-Z][A-Z0-9_]*$"


class DicomwebCredentials(BaseModel):
    """How the gateway authenticates to the tenant's PACS: HTTP basic or a bearer token.

    The secret (password or token) is named, never written here: an environment variable
    (``secret_env``) or a mounted file (``secret_file``, e.g. a Kubernetes secret volume).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Literal["basic", "bearer"]
    username: str | None = Field(default=None, min_length=1, max_length=200)
    secret_env: str | None = Field(default=None, pattern=_ENV_NAME)
    secret_file: Path | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> Self:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("name the secret by exactly one of secret_env and secret_file")
        if self.scheme == "basic" and self.username is None:
            raise ValueError("basic credentials need a username")
        return self

    def secret(self) -> str:
        if self.secret_env is not None:
            value = os.environ.get(self.secret_env, "")
            if not value:
                raise PolicyError(f"{self.secret_env} is not set")
            return value
        assert self.secret_file is not None
        try:
            value = self.secret_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise PolicyError(f"cannot read {self.secret_file}: {error.strerror}") from None
        if not value:
            raise PolicyError(f"{self.secret_file} is empty")
        return value


class TenantPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    display_name: str = Field(min_length=1, max_length=200)
    link_expiry_default_hours: int = Field(default=72, gt=0)
    link_expiry_max_hours: int = Field(default=168, gt=0)
    recipient_auth: RecipientAuth = "none"
    link_max_uses: int | None = Field(
        default=None, gt=0, description="Grants per link; unlimited when absent."
    )
    viewer_url: HttpUrl = Field(
        default=HttpUrl("http://127.0.0.1:8080/viewer"),
        description="Where granted access is redirected, with a short-lived signed ticket.",
    )
    sso: SsoPolicy | None = None
    sender_auth: Literal["launch", "sso"] = Field(
        default="launch",
        description=(
            "How a sender opening the sharing page is authenticated: launch (the one-time "
            "launch from OmegaAI carries its signed-in user) or sso (the sender also signs in "
            "at the staff_sso provider, as the launch's user)."
        ),
    )
    staff_sso: SsoPolicy | None = Field(
        default=None,
        description="The staff OpenID provider for sender_auth sso (not the recipients' sso).",
    )
    time_zone: str = Field(
        default=DEFAULT_TIME_ZONE,
        description=(
            "IANA time zone in which the tenant's pages and emails show times (a link's "
            "expiry); America/Toronto when absent."
        ),
    )
    access_session_minutes: int = Field(
        default=30,
        gt=0,
        le=30,
        description=(
            "How long a recipient's access lasts after a grant, from the grant, never slid "
            "by pressing View study again; at most 30 minutes (a policy may only shorten it)."
        ),
    )
    dicomweb_url: HttpUrl | None = Field(
        default=None,
        description="The tenant's PACS (DICOMweb base URL): the built-in viewer's images.",
    )
    dicomweb_credentials: DicomwebCredentials | None = None
    recipient_access: RecipientAccess = Field(
        default="view", description="Whether recipients may also download the DICOM files."
    )
    recipient_summary: list[SummaryField] = Field(
        default_factory=_default_summary,
        description="What of the study the recipient's viewer shows above the images.",
    )
    external_viewer_url: HttpUrl | None = Field(
        default=None,
        description=(
            "Send recipients to this viewer (with a ticket it checks at the gateway's "
            "Orthanc-authorization endpoint) instead of the built-in one."
        ),
    )
    sender_domains: list[str] = Field(
        default_factory=list,
        description=(
            "The tenant's own email domains: a link email's Reply-To is the sender's address "
            "only when it is at one of these; otherwise the email has no Reply-To."
        ),
    )
    notify_sender_on_first_access: bool = Field(
        default=False,
        description=(
            "Email the sender once when the recipient is first granted access to a link "
            "share (no PHI: the share reference and the recipient's masked address)."
        ),
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        time_zone(value)  # raises ValueError, which pydantic reports with the field's name
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.link_expiry_default_hours > self.link_expiry_max_hours:
            raise ValueError("link_expiry_default_hours exceeds link_expiry_max_hours")
        if self.recipient_auth == "sso" and self.sso is None:
            raise ValueError("recipient_auth sso needs an sso block")
        if self.sender_auth == "sso" and self.staff_sso is None:
            raise ValueError("sender_auth sso needs a staff_sso block")
        return self


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenants: dict[str, TenantPolicy]


class PolicyError(ValueError):
    pass


def load_policies(path: Path | None) -> dict[str, TenantPolicy]:
    """Read the policy file (or the bundled default); fail loudly on any mistake in it."""
    if path is None:
        text = files("blume_runtime").joinpath("default_tenants.yaml").read_text()
        origin = "bundled default_tenants.yaml"
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise PolicyError(f"cannot read tenant policy file {path}: {error.strerror}") from None
        origin = str(path)
    try:
        return PolicyFile.model_validate(yaml.safe_load(text)).tenants
    except (yaml.YAMLError, ValidationError) as error:
        raise PolicyError(f"invalid tenant policy in {origin}: {error}") from None
