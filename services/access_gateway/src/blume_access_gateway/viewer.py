"""The scoped image proxy: a session reaches the one study it was granted, and nothing else.

The browser names a study only by an opaque **handle** bound to its session: for a recipient
``r<mac>``, an HMAC of the link and use in the signed ``access`` cookie; for a patient
``p<entry><mac>``, the (random, non-PHI) entry id with an HMAC of entry and patient. A
handle presented with another session's cookie, or made up, matches nothing: 404. Series and
images are positions (``/series/<n>/frames/<k>``); the server maps them to UIDs from the
PACS's own answers, so no UID ever reaches a URL.

Every request runs the one grant check (``grants.check_viewer_grant`` / ``check_entry_grant``) on
the projections, with the browser's session, in one transaction: a revoked or expired share
answers 410 from the next request on, and nothing is granted while the projections cannot
show they are current (``FreshnessCheck.stale``, asked on every request).

**The grant cache.** A viewer scrolling a series asks for dozens of images a second; a
granted scope is kept in process memory for at most ``GRANT_CACHE_SECONDS`` (250 ms, a
quarter of the 1 s a revocation may take to bite) so that those requests do not each read
the database. It is dropped sooner when this process applies any event to its projections
(a revocation applied here bites at the next request), when the session or the link
reaches its end by the clock, and when the session signs out here. From
``GRANT_RECHECK_SECONDS`` of age, a request that reuses a grant also starts its check
again beside it, so scrolling rarely waits for the database;
the grant a request reuses is still never older than the bound. A revocation applied by
another replica reaches this one's requests within ``GRANT_CACHE_SECONDS``; a sign-out
elsewhere likewise. Refusals are never cached.

What viewing records (the BALP Read once per series per session, across replicas; the
Export; the study not on the PACS) is ``viewer_audit``, the ``audit`` of the ``Viewer``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Final, Literal, Protocol

from blume_runtime.tenants import PolicyError, TenantPolicy
from blume_runtime.unit_of_work import UnitsOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_access_gateway.dicomweb import (
    DicomwebClient,
    Instance,
    Pacs,
    PacsError,
    SeriesListing,
    StudyListing,
)
from blume_access_gateway.freshness import FreshnessCheck
from blume_access_gateway.grants import (
    EntryRefusal,
    ViewerRefusal,
    check_entry_grant,
    check_viewer_grant,
)
from blume_access_gateway.sessions import live_session
from blume_access_gateway.viewer_audit import ViewerAudit, bounded_put

HANDLE: Final = re.compile(r"^(r[0-9a-f]{32}|p[0-9a-f]{64})$")
_MAC_HEX: Final = 32
GRANT_CACHE_SECONDS: Final = 0.25
"""How long a granted scope is reused without reading the database (module docstring)."""
GRANT_RECHECK_SECONDS: Final = 0.1
"""From this age a reused grant is checked again beside the request that reused it."""
INDEX_TTL_SECONDS: Final = 60.0
"""How long the series list and image order of a study are kept between requests: the
grant is checked on every request regardless; this only saves asking the PACS again."""
_INDEX_ENTRIES: Final = 64


class Refusal(Enum):
    """Why a handle reaches nothing now, as the HTTP status that answers it: ``NOT_FOUND``,
    no such handle for this session (another's, made up, or an entry not shown); ``GONE``,
    the share was revoked or has expired; ``NOT_CURRENT``, the projections cannot show they
    are current (try again)."""

    NOT_FOUND = 404
    GONE = 410
    NOT_CURRENT = 503

    @property
    def text(self) -> str:
        return self.name.lower()


_VIEWER_REFUSALS: Final = {
    ViewerRefusal.NO_SESSION: Refusal.NOT_FOUND,
    ViewerRefusal.UNKNOWN: Refusal.NOT_FOUND,
    ViewerRefusal.NOT_CURRENT: Refusal.NOT_CURRENT,
    ViewerRefusal.GONE: Refusal.GONE,
}


@dataclass(frozen=True, slots=True)
class Scope:
    """What one request's handle reaches, after the grant check."""

    handle: str
    session_hash: str
    """The viewing session's key (as ``sessions`` stores it, never the cookie's id)."""
    tenant_id: str
    share_id: str
    study_uid: str | None
    locale: str
    correlation_id: str
    traceparent: str | None
    audience: Literal["recipient", "patient"]
    link_id: str | None = None
    use_number: int | None = None
    entry_id: str | None = None
    blume_patient_id: str | None = None


@dataclass(frozen=True, slots=True)
class StudyIndex:
    listing: StudyListing
    series: tuple[SeriesListing, ...]
    fetched_at: float
    instances: dict[int, list[str]] = field(default_factory=dict)
    """Per series position (1-based), its SOP Instance UIDs by InstanceNumber, once asked."""


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()[:_MAC_HEX]


def recipient_handle(key: bytes, link_id: str, use_number: int) -> str:
    """The handle of a recipient's granted use of a link (its ``access`` cookie)."""
    return "r" + _mac(key, f"link:{link_id}:{use_number}")


def patient_handle(key: bytes, entry_id: str, blume_patient_id: str) -> str:
    """The handle of a patient's record entry (the entry id is random, not PHI)."""
    return "p" + entry_id.removeprefix("ent_") + _mac(key, f"entry:{entry_id}:{blume_patient_id}")


class _SharedStudy(Protocol):
    """A granted share's study as projected: a link's (``grants.ViewerGrant``) or a
    patient's entry (``ProjectedEntry``)."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def share_id(self) -> str: ...

    @property
    def study_instance_uid(self) -> str | None: ...

    @property
    def correlation_id(self) -> str: ...

    @property
    def traceparent(self) -> str | None: ...


def _shared(
    study: _SharedStudy,
    handle: str,
    session_hash: str,
    locale: str,
    audience: Literal["recipient", "patient"],
) -> Scope:
    """The scope of a granted link or entry, for this session; who is looking (link and
    use, or entry and patient) is the caller's to add."""
    return Scope(
        handle=handle,
        session_hash=session_hash,
        tenant_id=study.tenant_id,
        share_id=study.share_id,
        study_uid=study.study_instance_uid,
        locale=locale,
        correlation_id=study.correlation_id,
        traceparent=study.traceparent,
        audience=audience,
    )


def viewer_path(handle: str) -> str:
    return f"/view/{handle}"


@dataclass(frozen=True, slots=True)
class _Granted:
    """A scope the grant check allowed, kept for ``GRANT_CACHE_SECONDS`` at most."""

    scope: Scope
    checked_at: float
    """``time.monotonic()`` when the check began (before it read the database)."""
    applied_count: int
    """How many events this process had applied then (``FreshnessCheck.applied_count``)."""
    ends_at: datetime
    """When the session or the link ends by the clock, whichever is first."""


@dataclass(kw_only=True)
class Viewer:
    events: UnitsOfWork
    handle_key: bytes
    policies: dict[str, TenantPolicy]
    dicomweb: DicomwebClient
    clock: Callable[[], datetime]
    freshness: FreshnessCheck
    _index: OrderedDict[tuple[str, str], StudyIndex] = field(default_factory=OrderedDict)
    _known: OrderedDict[str, Scope] = field(default_factory=OrderedDict)
    _granted: OrderedDict[tuple[str, str], _Granted] = field(default_factory=OrderedDict)
    _rechecks: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    audit: ViewerAudit = field(init=False)
    """What viewing records: the BALP Read, Export and unavailability events."""

    def __post_init__(self) -> None:
        self.audit = ViewerAudit(events=self.events, clock=self.clock)

    # Handles ---------------------------------------------------------------------------

    def patient_handle(self, entry_id: str, blume_patient_id: str) -> str:
        return patient_handle(self.handle_key, entry_id, blume_patient_id)

    def known_scope(self, handle: str) -> Scope | None:
        """What this handle reached when this process last checked it (None if never).
        Only to start asking the PACS early: the grant is checked on every request."""
        return self._known.get(handle)

    @staticmethod
    def same_study(earlier: Scope, now: Scope) -> bool:
        return (earlier.tenant_id, earlier.study_uid) == (now.tenant_id, now.study_uid)

    async def scope(
        self, handle: str, *, access_session: str | None, patient_session: str | None
    ) -> Scope | Refusal:
        """The study this handle reaches for this browser's session (the access session's
        for a recipient's handle, the portal session's for a patient's), checked now."""
        if not HANDLE.match(handle):
            return Refusal.NOT_FOUND
        session_id = access_session if handle.startswith("r") else patient_session
        if session_id is None:
            return Refusal.NOT_FOUND
        if await self.freshness.stale() is not None:
            return Refusal.NOT_CURRENT
        key = (handle, session_id)
        if (granted := self._still_granted(key)) is not None:
            if time.monotonic() - granted.checked_at >= GRANT_RECHECK_SECONDS:
                self._recheck_soon(handle, session_id)
            return granted.scope
        return await self._check(handle, session_id)

    def forget_session(self, session_id: str) -> None:
        """Drop what this process keeps granted to a session that just ended here (a
        sign-out), and any check of it in flight: its next request is checked anew."""
        for key in [key for key in self._granted if key[1] == session_id]:
            del self._granted[key]
        for key in [key for key in self._rechecks if key[1] == session_id]:
            self._rechecks.pop(key).cancel()

    def _recheck_soon(self, handle: str, session_id: str) -> None:
        """Check again beside this request, so that a scrolling viewer's next requests find
        a fresh grant rather than each waiting for the database."""
        key = (handle, session_id)
        if key in self._rechecks:
            return
        task = asyncio.create_task(self._recheck(handle, session_id))
        self._rechecks[key] = task
        task.add_done_callback(lambda _done: self._rechecks.pop(key, None))

    async def _recheck(self, handle: str, session_id: str) -> None:
        try:
            await self._check(handle, session_id)
        except Exception:  # noqa: BLE001 - the next request checks for itself
            self._granted.pop((handle, session_id), None)

    async def _check(self, handle: str, session_id: str) -> Scope | Refusal:
        """The grant check itself, in one transaction; a grant is kept briefly."""
        key = (handle, session_id)
        checked_at, applied_count = time.monotonic(), self.freshness.applied_count
        async with self.events.db.transaction() as session:
            if handle.startswith("r"):
                checked = await self._link_scope(session, handle, session_id)
            else:
                checked = await self._entry_scope(session, handle, session_id)
        if isinstance(checked, Refusal):
            self._granted.pop(key, None)
            self._known.pop(handle, None)
            return checked
        scope, ends_at = checked
        bounded_put(self._granted, key, _Granted(scope, checked_at, applied_count, ends_at))
        bounded_put(self._known, handle, scope)
        return scope

    def _still_granted(self, key: tuple[str, str]) -> _Granted | None:
        """The scope granted moments ago, while nothing can have changed it: under
        ``GRANT_CACHE_SECONDS`` old, no event applied since, the session and link not
        past their end."""
        granted = self._granted.get(key)
        if granted is None:
            return None
        if (
            time.monotonic() - granted.checked_at >= GRANT_CACHE_SECONDS
            or self.freshness.applied_count != granted.applied_count
            or self.clock() >= granted.ends_at
        ):
            del self._granted[key]
            return None
        return granted

    async def _link_scope(
        self, session: AsyncSession, handle: str, session_id: str
    ) -> tuple[Scope, datetime] | Refusal:
        def may_hold(link_id: str, use_number: int) -> bool:
            expected = recipient_handle(self.handle_key, link_id, use_number)
            return hmac.compare_digest(handle, expected)

        granted = await check_viewer_grant(
            session, session_id, self.clock(), self.freshness, may_hold
        )
        if isinstance(granted, ViewerRefusal):
            return _VIEWER_REFUSALS[granted]
        scope = _shared(granted, handle, granted.session_hash, granted.locale, "recipient")
        scope = replace(scope, link_id=granted.link_id, use_number=granted.use_number)
        return scope, granted.ends_at

    async def _entry_scope(
        self, session: AsyncSession, handle: str, session_id: str
    ) -> tuple[Scope, datetime] | Refusal:
        browser = await live_session(session, "patient", session_id, self.clock())
        entry_id = f"ent_{handle[1:33]}"
        if browser is None or not hmac.compare_digest(
            handle, self.patient_handle(entry_id, browser.subject)
        ):
            return Refusal.NOT_FOUND
        patient = browser.subject
        verdict = await check_entry_grant(session, entry_id, patient, self.freshness)
        if verdict is EntryRefusal.NOT_CURRENT:
            return Refusal.NOT_CURRENT
        if isinstance(verdict, EntryRefusal):
            return Refusal.NOT_FOUND
        scope = _shared(
            verdict.entry, handle, browser.session_hash, verdict.account.locale, "patient"
        )
        scope = replace(scope, entry_id=entry_id, blume_patient_id=patient)
        return scope, browser.expires_at

    # The study on the PACS ---------------------------------------------------------------

    def pacs(self, scope: Scope) -> Pacs | None:
        policy = self.policies.get(scope.tenant_id)
        if policy is None:
            return None
        try:
            return Pacs.for_policy(policy)
        except PolicyError:
            return None

    def target(self, scope: Scope) -> tuple[Pacs, str] | None:
        """The tenant's PACS and the scope's study UID, when both are known."""
        pacs = self.pacs(scope)
        if pacs is None or scope.study_uid is None:
            return None
        return pacs, scope.study_uid

    async def index(self, scope: Scope) -> StudyIndex | None:
        """The study's series (cached briefly); None when it is not on the PACS (PacsError
        when the PACS cannot be asked)."""
        target = self.target(scope)
        if target is None or scope.study_uid is None:
            return None
        pacs = target[0]
        key = (scope.tenant_id, scope.study_uid)
        cached = self._index.get(key)
        if cached is not None and time.monotonic() - cached.fetched_at < INDEX_TTL_SECONDS:
            self._index.move_to_end(key)
            return cached
        listing = await self.dicomweb.study(pacs, scope.study_uid)
        if listing is None:
            self._index.pop(key, None)
            return None
        series = await self.dicomweb.series(pacs, scope.study_uid)
        fresh = StudyIndex(listing, tuple(series), time.monotonic())
        bounded_put(self._index, key, fresh, _INDEX_ENTRIES)
        return fresh

    async def series_instances(self, scope: Scope, index: StudyIndex, number: int) -> list[str]:
        if not 1 <= number <= len(index.series):
            return []
        known = index.instances.get(number)
        if known is not None:
            return known
        target = self.target(scope)
        if target is None:
            return []
        pacs, study_uid = target
        ordered = await self.dicomweb.instance_order(
            pacs, study_uid, index.series[number - 1].series_uid
        )
        index.instances[number] = ordered
        return ordered

    async def frame(self, scope: Scope, series: int, image: int) -> Instance | None:
        """The PACS address of image ``image`` (1-based) of series ``series``, if any."""
        index = await self.index(scope)
        if index is None:
            return None
        instances = await self.series_instances(scope, index, series)
        if not 1 <= image <= len(instances):
            return None
        target = self.target(scope)
        if target is None:
            return None
        series_uid = index.series[series - 1].series_uid
        return Instance(target[0], target[1], series_uid, instances[image - 1])


__all__ = ["PacsError", "Refusal", "Scope", "StudyIndex", "Viewer"]
