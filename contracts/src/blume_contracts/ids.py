"""Identifiers derived by rule, so every party that needs one computes the same value."""

from __future__ import annotations

import hashlib

from blume_contracts.envelope import RawEvent


def share_id_for(request: RawEvent) -> str:
    """The share a ``study.send.requested`` makes, derived from the request's dedupe key
    (``source``, ``id``): a redelivered request makes the same share, and the requester
    knows the share's id before the dispatcher answers."""
    digest = hashlib.sha256(f"{request.source}\n{request.id}".encode()).hexdigest()
    return f"shr_{digest[:32]}"
