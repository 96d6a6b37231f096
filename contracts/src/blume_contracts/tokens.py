"""How a link token is referred to without being kept: its SHA-256.

link_issuer puts the hash in ``share.link.issued``; the access gateway hashes a presented
token the same way to find its link. The token has 256 bits of entropy, so no salt is needed.
"""

from __future__ import annotations

import hashlib


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
