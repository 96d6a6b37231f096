"""How a link token is referred to without being kept: its SHA-256; and what an
unsubscribe token carries.

link_issuer puts the hash in ``share.link.issued``; the access gateway hashes a presented
token the same way to find its link. The token has 256 bits of entropy, so no salt is needed.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blume_contracts.events import Identifier


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UnsubscribeClaims(BaseModel):
    """What a Blume email's unsubscribe token says, sealed by the notifier (Fernet, the
    shared sealing key) and opened by the access gateway: opaque in the URL, no PHI."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blume_patient_id: Identifier = Field(alias="p")
    tenant_id: Identifier = Field(alias="t")

    def to_text(self) -> str:
        return self.model_dump_json(by_alias=True)

    @classmethod
    def from_text(cls, text: str) -> UnsubscribeClaims | None:
        try:
            return cls.model_validate_json(text)
        except ValidationError:
            return None
