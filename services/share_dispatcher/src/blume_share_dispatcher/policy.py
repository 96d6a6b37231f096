"""Tenant policy: per organisation, how long links live and how recipients authenticate."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class TenantPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    display_name: str = Field(min_length=1, max_length=200)
    link_expiry_default_hours: int = Field(default=72, gt=0)
    link_expiry_max_hours: int = Field(default=168, gt=0)
    recipient_auth: Literal["none", "email_otp", "sso"] = "none"

    @model_validator(mode="after")
    def _default_within_max(self) -> Self:
        if self.link_expiry_default_hours > self.link_expiry_max_hours:
            raise ValueError("link_expiry_default_hours exceeds link_expiry_max_hours")
        return self


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenants: dict[str, TenantPolicy]


class PolicyError(ValueError):
    pass


def load_policies(path: Path | None) -> dict[str, TenantPolicy]:
    """Read the policy file (or the bundled default); fail loudly on any mistake in it."""
    if path is None:
        text = files("blume_share_dispatcher").joinpath("default_tenants.yaml").read_text()
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
