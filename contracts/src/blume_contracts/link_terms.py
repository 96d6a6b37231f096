"""What a link keeps of its share's terms, flat, written once.

link_issuer's own row (from ``share.link.requested``) and the access gateway's projection
of it (from ``share.link.issued``) store the same columns from the same event fields: the
parties, the organisation and locale the pages speak for, and the tenant's policy frozen
when the share was accepted.
"""

from __future__ import annotations

from typing import Any

from blume_contracts.events import ShareLinkIssued, ShareLinkRequested


def link_columns(terms: ShareLinkRequested | ShareLinkIssued) -> dict[str, Any]:
    """The link row's columns that come straight from the event, by column name."""
    return {
        "recipient_email": terms.recipient.email,
        "recipient_name": terms.recipient.name,
        "sender_name": terms.sender.name,
        "sender_email": terms.sender.email,
        "organisation": terms.organisation,
        "locale": terms.locale,
        "recipient_auth": terms.recipient_auth,
        "max_uses": terms.max_uses,
        "expires_at": terms.expires_at,
    }
