"""Link tokens: 256 bits from the OS CSPRNG, URL-safe base64 without padding (43 characters)."""

from __future__ import annotations

import secrets
from typing import Final

TOKEN_BYTES: Final = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)
