"""Who is asking: the client's address (behind trusted proxies only) and user agent."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from blume_contracts.events import ClientContext
from starlette.requests import Request

from blume_access_gateway.settings import IpNetwork

UNKNOWN_ADDRESS: Final = "0.0.0.0"  # noqa: S104 - a placeholder value, not a bind address
MAX_USER_AGENT: Final = 200
"""The user agent is the requester's own text and is kept for years in the audit trail:
enough to tell browsers apart, not a place to store what an attacker chooses."""


@dataclass(frozen=True, slots=True)
class Visit:
    """One request, as its audit records name it: who asked, and the correlation id of a
    request that belongs to no share yet (``Gateway.visit``)."""

    client: ClientContext
    request_id: str


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        # A scope ("fe80::1%eth0") says which interface, not who: drop it.
        return ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[IpNetwork]
) -> bool:
    return any(address in network for network in proxies)


def client_ip(request: Request, trusted_proxies: Sequence[IpNetwork]) -> str:
    """The peer's address; when the peer is a trusted proxy, the nearest untrusted hop of
    X-Forwarded-For (read right to left: the left end is whatever the client claimed)."""
    peer = _address(request.client.host) if request.client else None
    if peer is None:
        return UNKNOWN_ADDRESS
    if not _trusted(peer, trusted_proxies):
        return str(peer)
    hops = [
        hop for header in request.headers.getlist("x-forwarded-for") for hop in header.split(",")
    ]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # a malformed hop: trust nothing further left
        if not _trusted(address, trusted_proxies):
            return str(address)
    return str(peer)


def normalised_user_agent(agent: str | None) -> str | None:
    """Printable ASCII only (anything else becomes ``?``), whitespace runs one space,
    at most ``MAX_USER_AGENT`` characters; None when nothing is left."""
    if not agent:
        return None
    printable = "".join(" " if c.isspace() else c if " " <= c <= "~" else "?" for c in agent)
    collapsed = " ".join(printable.split())[:MAX_USER_AGENT].rstrip()
    return collapsed or None


def client_context(request: Request, trusted_proxies: Sequence[IpNetwork]) -> ClientContext:
    return ClientContext(
        client_ip=client_ip(request, trusted_proxies),
        user_agent=normalised_user_agent(request.headers.get("user-agent")),
    )
