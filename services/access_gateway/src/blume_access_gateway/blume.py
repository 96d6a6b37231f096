"""The Blume deep link: a signed-in patient sees a study in their own record, and no one else.

The gateway's projections of ``share.blume.published``, ``patient.account.updated`` and
``share.revoked`` say whose entry it is, whether its share was revoked and whether the
account may use the portal (``grants.check_entry_grant``). Whatever the reason an entry is
not shown (no such entry, someone else's, revoked, the account inactive or withholding its
portal), the answer is the same 404, audited as ``share.blume.denied`` (a flood of probes
from one client for one patient is counted per minute, as ``denial_tally`` does for unknown
link tokens); while the projections are not current, "try again".
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal
from urllib.parse import urlsplit

from blume_contracts.events import ClientContext, ShareBlumeDenied, ShareBlumeViewed
from blume_runtime.unit_of_work import UnitOfWork, UnitsOfWork

from blume_access_gateway.denial_tally import CountedDenials, DenialTally
from blume_access_gateway.events import UNKNOWN_TENANT
from blume_access_gateway.freshness import FreshnessCheck
from blume_access_gateway.grants import EntryRefusal, check_entry_grant
from blume_access_gateway.models import ProjectedAccount, ProjectedEntry
from blume_access_gateway.sessions import (
    PATIENT_SESSION_MAX,
    NewSession,
    StartedSession,
    live_session,
    start_session,
)

ENTRY_ID: Final = re.compile(r"^ent_[0-9a-f]{32}$")
PORTAL_HOME: Final = "/blume/"
EntryDenial = Literal["not_shown"]
_RETURN_PATH: Final = re.compile(r"^/blume/[A-Za-z0-9_/-]*$")


@dataclass(frozen=True, slots=True)
class StudyView:
    entry_id: str
    tenant_id: str
    locale: str
    study_date: str | None
    modalities: list[str]
    description: str | None


def safe_return_path(candidate: str | None) -> str:
    """Where to send a patient after sign-in: a path on this portal, or the portal's home.

    Only ``/blume/...`` made of plain path characters passes, so no scheme, host, ``//``,
    backslash, encoded character or dot segment can turn it into an open redirect.
    """
    if not candidate or not _RETURN_PATH.match(candidate):
        return PORTAL_HOME
    parts = urlsplit(candidate)
    if parts.scheme or parts.netloc or "//" in candidate:
        return PORTAL_HOME
    return candidate


def _study_view(entry: ProjectedEntry, locale: str) -> StudyView:
    return StudyView(
        entry_id=entry.entry_id,
        tenant_id=entry.tenant_id,
        locale=locale,
        study_date=entry.study_date.isoformat() if entry.study_date else None,
        modalities=list(entry.modalities),
        description=entry.description,
    )


class PatientPortal:
    def __init__(
        self, events: UnitsOfWork, clock: Callable[[], datetime], freshness: FreshnessCheck
    ) -> None:
        self._events = events
        self._clock = clock
        self._freshness = freshness
        self.denials: DenialTally[EntryDenial] = DenialTally()

    async def sign_in(self, blume_patient_id: str) -> StartedSession:
        """A new portal session for the patient the portal's provider named."""
        async with self._events.db.transaction() as session:
            account = await session.get(ProjectedAccount, blume_patient_id)
            tenant_id = account.tenant_id if account is not None else None
            portal = NewSession("patient", blume_patient_id, PATIENT_SESSION_MAX, tenant_id)
            return await start_session(session, portal, self._clock())

    async def signed_in(self, session_id: str | None) -> str | None:
        """The patient whose live portal session the cookie names, if any."""
        if session_id is None:
            return None
        async with self._events.db.transaction() as session:
            row = await live_session(session, "patient", session_id, self._clock())
        return row.subject if row is not None else None

    async def patient_locale(self, blume_patient_id: str) -> str:
        async with self._events.db.transaction() as session:
            account = await session.get(ProjectedAccount, blume_patient_id)
        return account.locale if account is not None else "en-CA"

    async def view(
        self, entry_id: str, blume_patient_id: str, client: ClientContext, request_id: str
    ) -> StudyView | EntryRefusal:
        """The entry, if this patient may see it now; the view, or the refusal, is audited."""
        async with self._events.unit_of_work() as work:
            if not ENTRY_ID.match(entry_id):
                self._record_denial(work, None, blume_patient_id, client, request_id)
                return EntryRefusal.NOT_SHOWN
            verdict = await check_entry_grant(
                work.session, entry_id, blume_patient_id, self._freshness
            )
            if verdict is EntryRefusal.NOT_SHOWN:
                self._record_denial(work, entry_id, blume_patient_id, client, request_id)
            if isinstance(verdict, EntryRefusal):
                return verdict
            entry = verdict.entry
            work.emit(
                "share.blume.viewed",
                ShareBlumeViewed(
                    share_id=entry.share_id,
                    entry_id=entry.entry_id,
                    blume_patient_id=blume_patient_id,
                    client=client,
                ),
                tenantid=entry.tenant_id,
                correlationid=entry.correlation_id or f"blume-view-{request_id}",
                traceparent=entry.traceparent,
            )
            return _study_view(entry, verdict.account.locale)

    async def record_denial(
        self, entry_id: str | None, blume_patient_id: str, client: ClientContext, request_id: str
    ) -> None:
        """A probe refused outside the study page (the image viewer's), recorded as the
        page records its own."""
        async with self._events.unit_of_work() as work:
            self._record_denial(work, entry_id, blume_patient_id, client, request_id)

    def _record_denial(
        self,
        work: UnitOfWork,
        entry_id: str | None,
        blume_patient_id: str,
        client: ClientContext,
        request_id: str,
    ) -> None:
        """``share.blume.denied`` now for the first refusal of this client and patient in a
        minute; the rest of that minute only counted (``record_counted_denials``)."""
        if not self.denials.record_now(client, "not_shown", self._clock(), blume_patient_id):
            return
        denied = ShareBlumeDenied(
            entry_id=entry_id, blume_patient_id=blume_patient_id, client=client
        )
        _emit_denied(work, denied, f"blume-view-{request_id}")

    async def record_counted_denials(self, *, everything: bool = False) -> int:
        """One ``share.blume.denied`` with its count per client, patient and finished minute
        (``everything``: the current minute too, on stopping)."""
        return await self.denials.record_due(
            self._events, self._clock(), _counted_denials, everything=everything
        )


def _counted_denials(work: UnitOfWork, bucket: CountedDenials[EntryDenial]) -> None:
    """A client's further refused entries for one patient in one minute, as one event."""
    denied = ShareBlumeDenied(
        blume_patient_id=bucket.subject,
        client=bucket.client,
        count=bucket.count,
        counted_from=bucket.minute,
    )
    _emit_denied(work, denied, f"denials-{uuid.uuid4()}")


def _emit_denied(work: UnitOfWork, denied: ShareBlumeDenied, correlation_id: str) -> None:
    """``share.blume.denied``, which names no tenant: an entry that is not the patient's
    says nothing of whose it is."""
    work.emit("share.blume.denied", denied, tenantid=UNKNOWN_TENANT, correlationid=correlation_id)
