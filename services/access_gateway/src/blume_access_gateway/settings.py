"""The gateway's own settings (``BLUME_*``), beside the runtime's shared ``Settings``."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class GatewayConfigError(RuntimeError):
    """The gateway cannot start as configured (the message says what to set)."""


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLUME_", extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)

    gateway_secret_key: SecretStr | None = None
    """Signs CSRF tokens, cookies and viewer tickets. Every gateway instance needs the same."""
    gateway_secret_key_file: Path | None = None

    portal_oidc_issuer: str | None = None
    """The Blume portal's OpenID provider, for patient sign-in on ``/blume``."""
    portal_oidc_client_id: str | None = None
    portal_oidc_client_secret: SecretStr | None = None

    trusted_proxies: Annotated[list[IpNetwork], NoDecode] = Field(default_factory=list)
    """Comma-separated addresses or networks whose X-Forwarded-For is believed."""

    cookie_secure: bool = True
    """Mark cookies Secure. Browsers accept Secure cookies from http://127.0.0.1 and
    http://localhost, so only a plain-HTTP deployment on another name needs false."""

    rate_limit_storage_url: str = "memory://"
    """``limits`` storage: memory:// (per process) or redis://host:6379 (shared)."""
    rate_limit_per_ip: str = "60/minute"
    rate_limit_per_token: str = "30/minute"  # noqa: S105 - a rate, not a credential
    rate_limit_per_launch_client: str = "60/minute"
    """Launch and share API calls per launch client (OmegaAI's backend)."""
    rate_limit_code_requests: str = "5/15 minutes"
    """Sign-in code emails per link: each one lands in the recipient's inbox."""
    rate_limit_viewer: str = "1200/minute"
    """Image-proxy requests per viewing session (handle): scrolling a 300-image series at
    full speed is 300 requests in a few seconds. The per-address limit does not apply."""

    projection_max_lag_seconds: float = Field(default=5.0, gt=0)
    """``BLUME_PROJECTION_MAX_LAG_SECONDS``: how far behind its events the gateway may be
    and still grant access (``blume_access_gateway.freshness``)."""

    orthanc_auth_username: str | None = None
    """The user name Orthanc's authorization plugin sends with each call to
    ``/api/v1/orthanc/tokens/validate`` (its ``WebServiceUsername``)."""
    orthanc_auth_password: SecretStr | None = None
    """Its password (the plugin's ``WebServicePassword``); or, from a mounted secret,
    ``orthanc_auth_password_file``. Without both name and password the endpoint refuses
    every call (401)."""
    orthanc_auth_password_file: Path | None = None

    help_dir: Path | None = None
    """Where the help articles are; by default the package's copy of ``docs/help``."""

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [ipaddress.ip_network(item.strip()) for item in value.split(",") if item.strip()]
        return value

    @property
    def portal_sign_in_configured(self) -> bool:
        return bool(self.portal_oidc_issuer and self.portal_oidc_client_id)
