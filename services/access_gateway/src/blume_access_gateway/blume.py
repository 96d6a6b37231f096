"""The Blume deep link: a signed-in patient sees a study in their own record, and no one else.

The record store (blume_publisher's) says whose entry it is and whether it is hidden; the
share's state (share_dispatcher's) says first when its share was revoked. Whatever the
reason an entry is not shown (no such entry, someone else's, hidden, revoked, the account
inactive or withholding its portal), the answer is the same 404.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

from blume_contracts.events import ClientContext, ShareBlumeViewed
from blume_publisher.models import AccountStatus, PatientAccount, RecordEntry
from blume_runtime.unit_of_work import UnitsOfWork
from blume_share_dispatcher.models import Share, ShareState
from sqlmodel import col, select

ENTRY_ID: Final = re.compile(r"^ent_[0-9a-f]{32}$")
PORTAL_HOME: Final = "/blume/"
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


def _study_view(entry: RecordEntry, locale: str) -> StudyView:
    resource: dict[str, Any] = entry.imaging_study or {}
    modalities = [
        str(coding.get("code"))
        for concept in resource.get("modality", [])
        for coding in concept.get("coding", [])
        if coding.get("code")
    ]
    return StudyView(
        entry_id=entry.entry_id,
        tenant_id=entry.tenant_id,
        locale=locale,
        study_date=resource.get("started"),
        modalities=modalities,
        description=resource.get("description"),
    )


class PatientPortal:
    def __init__(self, events: UnitsOfWork, clock: Callable[[], datetime]) -> None:
        self._events = events
        self._clock = clock

    async def patient_locale(self, blume_patient_id: str) -> str:
        async with self._events.db.transaction() as session:
            account = await session.get(PatientAccount, blume_patient_id)
        return account.locale if account is not None else "en-CA"

    async def view(
        self, entry_id: str, blume_patient_id: str, client: ClientContext, request_id: str
    ) -> StudyView | None:
        """The entry, if this patient may see it now; the view is audited."""
        if not ENTRY_ID.match(entry_id):
            return None
        async with self._events.unit_of_work() as work:
            query = (
                select(RecordEntry, PatientAccount, Share.state, Share.correlation_id)
                .join(
                    PatientAccount,
                    col(PatientAccount.blume_patient_id) == col(RecordEntry.blume_patient_id),
                )
                .outerjoin(Share, col(Share.share_id) == col(RecordEntry.share_id))
                .where(col(RecordEntry.entry_id) == entry_id)
            )
            row = (await work.session.exec(query)).first()
            if row is None:
                return None
            entry, account, share_state, correlation_id = row
            visible = (
                entry.blume_patient_id == blume_patient_id
                and entry.hidden_at is None
                and share_state != ShareState.REVOKED
                and account.status == AccountStatus.ACTIVE
                and account.tenant_id == entry.tenant_id
                and not account.withhold_portal
            )
            if not visible:
                return None
            work.emit(
                "share.blume.viewed",
                ShareBlumeViewed(
                    share_id=entry.share_id,
                    entry_id=entry.entry_id,
                    blume_patient_id=blume_patient_id,
                    client=client,
                ),
                tenantid=entry.tenant_id,
                correlationid=correlation_id or f"blume-view-{request_id}",
                traceparent=entry.traceparent,
            )
            return _study_view(entry, account.locale)
