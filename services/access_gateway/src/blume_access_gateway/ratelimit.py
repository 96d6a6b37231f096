"""Rate limits (the ``limits`` library): per client address and per link token.

Per address, so one client cannot sweep token space; per token, so many addresses cannot
hammer one link (or its codes). Keys are fingerprints, never the token itself. Storage is
in memory per process by default; ``redis://`` shares it between gateway instances.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from blume_access_gateway.settings import GatewaySettings

# A flood of refused requests still writes denial events; at most this many per address
# (and per token) per minute, so the audit trail records the flood without being it.
DENIAL_EVENTS: Final = "3/minute"


def _async_url(url: str) -> str:
    return url if url.startswith("async+") else f"async+{url}"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_seconds: int = 0


class RateLimits:
    def __init__(
        self,
        storage_url: str,
        *,
        per_ip: str,
        per_token: str,
        code_requests: str,
        per_launch_client: str = "60/minute",
        viewer: str = "1200/minute",
    ) -> None:
        storage = storage_from_string(_async_url(storage_url))
        self._limiter = MovingWindowRateLimiter(storage)
        # The image proxy's limit is hit on every frame. In memory, each hit of a moving
        # window hops to a thread once for every key that window storage holds (limits'
        # expiry task), about 0.3 ms of the gateway's CPU a frame: a sliding window counter
        # on a storage of its own keeps no such list, and still counts per session.
        self._viewer_limiter = SlidingWindowCounterRateLimiter(
            storage_from_string(_async_url(storage_url))
        )
        self._per_ip = parse(per_ip)
        self._per_token = parse(per_token)
        self._code_requests = parse(code_requests)
        self._per_launch_client = parse(per_launch_client)
        self._denial_events = parse(DENIAL_EVENTS)
        self._viewer = parse(viewer)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> RateLimits:
        return cls(
            settings.rate_limit_storage_url,
            per_ip=settings.rate_limit_per_ip,
            per_token=settings.rate_limit_per_token,
            code_requests=settings.rate_limit_code_requests,
            per_launch_client=settings.rate_limit_per_launch_client,
            viewer=settings.rate_limit_viewer,
        )

    async def _hit(
        self,
        item: RateLimitItem,
        *key: str,
        limiter: MovingWindowRateLimiter | SlidingWindowCounterRateLimiter | None = None,
    ) -> Verdict:
        limiter = limiter or self._limiter
        if await limiter.hit(item, *key):
            return Verdict(True)
        stats = await limiter.get_window_stats(item, *key)
        return Verdict(False, max(1, round(stats.reset_time - time.time())))

    async def link_request(self, client_ip: str, token_key: str) -> Verdict:
        """Every request on a link endpoint: once for the address, once for the token."""
        by_address = await self._hit(self._per_ip, "ip", client_ip)
        if not by_address.allowed:
            return by_address
        return await self._hit(self._per_token, "token", token_key)

    async def address_request(self, client_ip: str) -> Verdict:
        """Requests that name no link (sign-in callbacks, the Blume pages)."""
        return await self._hit(self._per_ip, "ip", client_ip)

    async def launch_client_request(self, client_id: str) -> Verdict:
        """A call of the launch or share API by one launch client."""
        return await self._hit(self._per_launch_client, "launch-client", client_id)

    async def viewer_request(self, session_key: str) -> Verdict:
        """An image-proxy request, counted per viewing session (not per address)."""
        return await self._hit(self._viewer, "viewer", session_key, limiter=self._viewer_limiter)

    async def code_request(self, token_key: str) -> Verdict:
        """Sending a sign-in code (an email to the recipient)."""
        return await self._hit(self._code_requests, "code-email", token_key)

    async def may_record_denial(self, client_ip: str, token_key: str | None) -> bool:
        if not await self._limiter.hit(self._denial_events, "denial-ip", client_ip):
            return False
        if token_key is None:
            return True
        return await self._limiter.hit(self._denial_events, "denial-token", token_key)
