"""The gateway secret and the purpose keys derived from it.

One secret, configured once; each use (CSRF tokens, cookies, viewer tickets, code hashes)
gets its own key derived with HMAC-SHA256, so a key handed to the viewer to check tickets
cannot forge a session cookie, and a value signed for one purpose never verifies as another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from blume_runtime.keyfiles import configured_secret, embedded_secret
from blume_runtime.settings import Settings

from blume_access_gateway.settings import GatewayConfigError, GatewaySettings

MIN_SECRET_LENGTH: Final = 32


class GatewayKeyError(GatewayConfigError):
    pass


def derive_key(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, f"blume-access-gateway/{purpose}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class GatewayKeys:
    csrf: bytes
    cookies: bytes
    viewer_ticket: bytes
    code_hash: bytes
    study_key: bytes
    """Names a sender's study by a keyed hash (``launches``), not by its UID."""
    viewer_handle: bytes
    """Makes the image proxy's opaque handles (``viewer``): bound to a session, no UID."""

    @classmethod
    def from_secret(cls, secret: bytes) -> GatewayKeys:
        if len(secret) < MIN_SECRET_LENGTH:
            raise GatewayKeyError(f"the gateway secret needs at least {MIN_SECRET_LENGTH} bytes")
        return cls(
            csrf=derive_key(secret, "csrf"),
            cookies=derive_key(secret, "cookies"),
            viewer_ticket=derive_key(secret, "viewer-ticket"),
            code_hash=derive_key(secret, "sign-in-code"),
            study_key=derive_key(secret, "sender-study"),
            viewer_handle=derive_key(secret, "viewer-handle"),
        )

    @classmethod
    def from_settings(cls, settings: Settings, gateway: GatewaySettings) -> GatewayKeys:
        raw = configured_secret(gateway.gateway_secret_key, gateway.gateway_secret_key_file)
        if raw is None and settings.embedded_broker:
            raw = embedded_secret(
                settings.state_dir / "gateway.key", lambda: secrets.token_urlsafe(48)
            )
        if raw is None:
            raise GatewayKeyError(
                "set BLUME_GATEWAY_SECRET_KEY or BLUME_GATEWAY_SECRET_KEY_FILE "
                "(at least 32 characters, the same for every gateway instance)"
            )
        return cls.from_secret(raw.encode())
