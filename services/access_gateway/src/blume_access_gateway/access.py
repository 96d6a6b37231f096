"""Recipient access through a link: each step one transaction, with the event that audits it.

The routes (``recipient_routes``) deal with HTTP: cookies, CSRF, pages. This module decides
and records: what a link is worth, who may pass, which use it is, which code counts.
A GET never gets past ``open_page``, which records the view and changes nothing else.
What each step answers is in ``outcomes``; the events it writes are built in ``link_events``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from blume_contracts.events import (
    AuthMethod,
    ClientContext,
    DenialReason,
)
from blume_contracts.urls import viewer_url
from blume_runtime.sealing import Sealer
from blume_runtime.tenants import PolicyError, TenantPolicy
from blume_runtime.unit_of_work import UnitOfWork, UnitsOfWork

from blume_access_gateway import link_events, otp
from blume_access_gateway.clients import Visit
from blume_access_gateway.denial_tally import DenialTally
from blume_access_gateway.freshness import FreshnessCheck
from blume_access_gateway.grants import (
    LinkId,
    Token,
    check_grant,
    grant_use,
    uses_left,
    uses_so_far,
)
from blume_access_gateway.keys import GatewayKeys
from blume_access_gateway.links import LinkLookup, LinkState, token_fingerprint
from blume_access_gateway.models import ProjectedLink
from blume_access_gateway.oidc import Identity
from blume_access_gateway.outcomes import (
    DENIAL_FOR_CODE,
    Answer,
    CodeSent,
    Granted,
    Refused,
    SignInNeeded,
    Unavailable,
    ViewOutcome,
    denial_reason,
)
from blume_access_gateway.ratelimit import RateLimits
from blume_access_gateway.sessions import (
    ACCESS_SESSION_MAX,
    AccessSession,
    NewSession,
    StartedSession,
    live_session,
    start_session,
)
from blume_access_gateway.sso import identity_matches, sso_provider
from blume_access_gateway.tickets import issue_ticket
from blume_access_gateway.viewer import recipient_handle, viewer_path

_AUTH_METHODS: Final[dict[str, AuthMethod]] = {
    "none": "none",
    "email_otp": "email_otp",
    "sso": "sso",
}


@dataclass(kw_only=True)
class RecipientAccess:
    """The recipient's steps through a link (the gateway builds one for all requests)."""

    events: UnitsOfWork
    keys: GatewayKeys
    sealer: Sealer
    policies: dict[str, TenantPolicy]
    limits: RateLimits
    ticket_issuer: str
    clock: Callable[[], datetime]
    freshness: FreshnessCheck
    denials: DenialTally[DenialReason] = field(default_factory=DenialTally)

    async def _check(self, work: UnitOfWork, handle: Token | LinkId) -> LinkLookup:
        return await check_grant(work.session, handle, self.clock(), self.freshness)

    def _refuse_unusable(
        self, work: UnitOfWork, lookup: LinkLookup, visit: Visit, token: str | None
    ) -> Refused:
        """A link that is unknown, expired, revoked or not current: record why, refuse."""
        return self._deny(work, lookup, denial_reason(lookup.state), visit, token)

    def _deny(
        self,
        work: UnitOfWork,
        lookup: LinkLookup,
        reason: DenialReason,
        visit: Visit,
        token: str | None,
    ) -> Refused:
        """Record why this visit is refused, and refuse it."""
        self._record_denial(work, lookup, reason, visit.client, token, visit.request_id)
        return Refused(lookup, reason)

    async def _usable(
        self, work: UnitOfWork, handle: Token | LinkId, visit: Visit, token: str | None
    ) -> tuple[LinkLookup, ProjectedLink, TenantPolicy] | Refused | Unavailable:
        """The link behind ``handle`` and its tenant's policy, for a step that goes on with
        them; else what the step answers: refused (recorded) when the link is not usable,
        unavailable when its tenant has no policy here."""
        lookup = await self._check(work, handle)
        link = lookup.link
        if link is None or not lookup.usable:
            return self._refuse_unusable(work, lookup, visit, token)
        policy = self.policies.get(link.tenant_id)
        if policy is None:
            return Unavailable(lookup)
        return lookup, link, policy

    # Recording -------------------------------------------------------------------------

    def _record_denial(
        self,
        work: UnitOfWork,
        lookup: LinkLookup,
        reason: DenialReason,
        client: ClientContext,
        token: str | None,
        correlation_id: str,
    ) -> None:
        link = lookup.link
        if link is None and not self.denials.record_now(client, reason, self.clock()):
            return  # counted: recorded with its minute's count (record_counted_denials)
        link_events.denied(work, link, reason, client, token, correlation_id)

    async def record_unknown(self, client: ClientContext, request_id: str) -> None:
        """A probe that names no link this browser holds (the image viewer's): a denial of
        an unknown link, counted per client and minute past the first."""
        async with self.events.unit_of_work() as work:
            unknown = LinkLookup(LinkState.UNKNOWN, None)
            self._record_denial(work, unknown, "unknown", client, None, request_id)

    async def record_counted_denials(self, *, everything: bool = False) -> int:
        """One ``share.link.denied`` with its count per client, reason and finished minute
        of denials of unknown links (``everything``: the current minute too, on stopping)."""
        return await self.denials.record_due(
            self.events, self.clock(), link_events.counted_denials, everything=everything
        )

    def access_lifetime(self, tenant_id: str) -> timedelta:
        """30 minutes from the grant, or the tenant's shorter ``access_session_minutes``."""
        policy = self.policies.get(tenant_id)
        if policy is None:
            return ACCESS_SESSION_MAX
        return min(ACCESS_SESSION_MAX, timedelta(minutes=policy.access_session_minutes))

    def _record_grant(
        self,
        work: UnitOfWork,
        lookup: LinkLookup,
        session: AccessSession,
        client: ClientContext,
        signed_in_as: str | None,
        new_session: StartedSession | None = None,
    ) -> Granted:
        link = lookup.link
        assert link is not None
        link_events.accessed(work, link, session, client, signed_in_as)
        policy = self.policies[link.tenant_id]
        ticket = issue_ticket(
            self.keys.viewer_ticket,
            issuer=self.ticket_issuer,
            link_id=link.link_id,
            share_id=link.share_id,
            use_number=session.use_number,
            now=self.clock(),
        )
        return Granted(lookup, session, self._viewer_redirect(policy, session, ticket), new_session)

    def _viewer_redirect(self, policy: TenantPolicy, session: AccessSession, ticket: str) -> str:
        """An external viewer (with the ticket it checks at the Orthanc-authorization
        endpoint), else the built-in viewer when the tenant names its PACS, else the
        tenant's ``viewer_url`` with the ticket."""
        if policy.external_viewer_url is not None:
            return viewer_url(str(policy.external_viewer_url), ticket)
        if policy.dicomweb_url is not None:
            handle = recipient_handle(self.keys.viewer_handle, session.link_id, session.use_number)
            return viewer_path(handle)
        return viewer_url(str(policy.viewer_url), ticket)

    async def _grant_new_use(
        self,
        work: UnitOfWork,
        lookup: LinkLookup,
        method: AuthMethod,
        client: ClientContext,
        signed_in_as: str | None,
    ) -> Refused | Granted:
        link = lookup.link
        assert link is not None
        use = await grant_use(work.session, link.link_id, link.max_uses, method, self.clock())
        if use is None:
            self._record_denial(work, lookup, "max_uses", client, None, link.correlation_id)
            return Refused(lookup, "max_uses")
        lifetime = self.access_lifetime(link.tenant_id)
        access = NewSession("access", link.link_id, lifetime, link.tenant_id, use, method)
        started = await start_session(work.session, access, self.clock())
        session = AccessSession(link.link_id, use, method)
        return self._record_grant(work, lookup, session, client, signed_in_as, started)

    async def in_session(self, link_id: str, session_id: str | None) -> bool:
        """Whether the browser's access cookie names a live session for this link."""
        if session_id is None:
            return False
        async with self.events.db.transaction() as session:
            row = await live_session(session, "access", session_id, self.clock())
        return row is not None and row.subject == link_id

    # Steps -----------------------------------------------------------------------------

    async def open_page(self, token: str, visit: Visit) -> LinkLookup:
        """A GET of the link page: record the view (or the denial); change nothing else.

        Unknown and known tokens take the same path: one hash, one indexed read, one event.
        """
        async with self.events.unit_of_work() as work:
            lookup = await self._check(work, Token(token))
            link = lookup.link
            if lookup.usable and link is not None:
                link_events.opened(work, link, visit.client)
            else:
                self._refuse_unusable(work, lookup, visit, token)
        return lookup

    async def refuse(self, token: str, reason: DenialReason, visit: Visit) -> LinkLookup:
        """Refuse before doing anything (rate limited, failed CSRF), and record it."""
        async with self.events.unit_of_work() as work:
            lookup = await self._check(work, Token(token))
            self._record_denial(work, lookup, reason, visit.client, token, visit.request_id)
        return lookup

    async def check_page(self, token: str, visit: Visit) -> LinkLookup:
        """The code page (a GET): still usable? A link that no longer is, is a denial."""
        async with self.events.unit_of_work() as work:
            lookup = await self._check(work, Token(token))
            if not lookup.usable:
                self._refuse_unusable(work, lookup, visit, token)
        return lookup

    async def press_view(self, token: str, session_id: str | None, visit: Visit) -> ViewOutcome:
        """The "View study" button: grant, send a code or start sign-in, by the link's policy.

        Within a live access session for this link (``session_id``, from the cookie) the
        same use is shown again: no new use, no new sign-in, and the session's absolute end
        stays where the grant put it."""
        async with self.events.unit_of_work() as work:
            found = await self._usable(work, Token(token), visit, token)
            if not isinstance(found, tuple):
                return found
            lookup, link, policy = found
            if link.recipient_auth == "sso" and policy.sso is None:
                return Unavailable(lookup)
            live = await live_session(work.session, "access", session_id, self.clock())
            if live is not None and live.subject == link.link_id and live.use_number is not None:
                method = _AUTH_METHODS.get(live.auth_method or "", "none")
                session = AccessSession(link.link_id, live.use_number, method)
                return self._record_grant(work, lookup, session, visit.client, None)
            return await self._by_policy(work, lookup, policy, token, visit)

    async def _by_policy(
        self,
        work: UnitOfWork,
        lookup: LinkLookup,
        policy: TenantPolicy,
        token: str,
        visit: Visit,
    ) -> ViewOutcome:
        link = lookup.link
        assert link is not None
        if link.recipient_auth == "none":
            return await self._grant_new_use(work, lookup, "none", visit.client, None)
        if not uses_left(link.max_uses, await uses_so_far(work.session, link.link_id)):
            self._record_denial(work, lookup, "max_uses", visit.client, None, link.correlation_id)
            return Refused(lookup, "max_uses")
        if link.recipient_auth == "sso":
            assert policy.sso is not None
            try:
                return SignInNeeded(lookup, sso_provider(policy.sso))
            except PolicyError:  # the client secret's variable is not set: ops must fix it
                return Unavailable(lookup)
        return await self._code_for(work, lookup, token, visit)

    async def _code_for(
        self, work: UnitOfWork, lookup: LinkLookup, token: str, visit: Visit
    ) -> ViewOutcome:
        """A new sign-in code for an email_otp link, unless its codes or its rate are spent."""
        link = lookup.link
        assert link is not None
        if await otp.link_exhausted(work.session, link.link_id):
            # Ten wrong codes over the link's life: no new code, only a new share helps.
            return self._deny(work, lookup, "code_attempts_exhausted", visit, token)
        verdict = await self.limits.code_request(token_fingerprint(token))
        if not verdict.allowed:
            self._record_denial(work, lookup, "rate_limited", visit.client, token, visit.request_id)
            return Refused(lookup, "rate_limited", retry_after_seconds=verdict.retry_after_seconds)
        return self._send_code(work, lookup, *await self._new_challenge(work, link))

    async def _new_challenge(self, work: UnitOfWork, link: ProjectedLink) -> tuple[str, str]:
        challenge, code = await otp.issue_challenge(
            work.session, link.link_id, self.keys.code_hash, self.clock()
        )
        return challenge.challenge_id, code

    def _send_code(
        self, work: UnitOfWork, lookup: LinkLookup, challenge_id: str, code: str
    ) -> CodeSent:
        link = lookup.link
        assert link is not None
        sealed_code = self.sealer.seal(code)
        expires_at = self.clock() + otp.CODE_LIFETIME
        link_events.code_requested(work, link, challenge_id, sealed_code, expires_at)
        return CodeSent(lookup, challenge_id)

    def _tell_sender_link_locked(self, work: UnitOfWork, link: ProjectedLink) -> None:
        """``share.link.locked``: the notifier emails the sender that only a new share helps.
        A link projected before the sender's address was kept cannot say whom to tell."""
        if link.sender_email is None:
            return
        link_events.locked(work, link, link.sender_email, self.clock())

    async def enter_code(self, token: str, challenge_id: str, entered: str, visit: Visit) -> Answer:
        async with self.events.unit_of_work() as work:
            found = await self._usable(work, Token(token), visit, token)
            if not isinstance(found, tuple):
                return found
            lookup, link, _policy = found
            check = await otp.check_code(
                work.session,
                challenge_id=challenge_id,
                link_id=link.link_id,
                entered=entered,
                key=self.keys.code_hash,
                now=self.clock(),
            )
            if check.verdict is not otp.CodeVerdict.ACCEPTED:
                refusal = DENIAL_FOR_CODE[check.verdict]
                self._record_denial(work, lookup, refusal, visit.client, token, visit.request_id)
                if check.newly_exhausted:
                    self._tell_sender_link_locked(work, link)
                return Refused(lookup, refusal, tries_left=check.tries_left)
            return await self._grant_new_use(work, lookup, "email_otp", visit.client, None)

    async def finish_sign_in(self, link_id: str, identity: Identity | None, visit: Visit) -> Answer:
        """After the identity provider: ``identity`` is None when the sign-in failed."""
        async with self.events.unit_of_work() as work:
            found = await self._usable(work, LinkId(link_id), visit, None)
            if not isinstance(found, tuple):
                return found
            lookup, link, policy = found
            if policy.sso is None:
                return Unavailable(lookup)
            if identity is None or not identity_matches(identity, link, policy.sso):
                failed: DenialReason = "sso_failed" if identity is None else "sso_mismatch"
                return self._deny(work, lookup, failed, visit, None)
            return await self._grant_new_use(work, lookup, "sso", visit.client, identity.email)
