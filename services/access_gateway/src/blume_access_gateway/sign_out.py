"""Sign-out: end this browser's server-side sessions (a recipient's access, a patient's
portal sign-in) and audit each one ended, in one transaction.

Shared computers are common in clinics: once signed out, the same cookie (even copied
elsewhere first) opens nothing, because the session row is ended (``sessions``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from blume_contracts.events import ClientContext, SessionSignedOut
from blume_runtime.unit_of_work import UnitOfWork, UnitsOfWork

from blume_access_gateway.events import UNKNOWN_TENANT
from blume_access_gateway.models import BrowserSession, ProjectedLink
from blume_access_gateway.sessions import end_session


class SignOut:
    def __init__(self, events: UnitsOfWork, clock: Callable[[], datetime]) -> None:
        self._events = events
        self._clock = clock

    async def sign_out(
        self,
        *,
        access_session: str | None,
        patient_session: str | None,
        client: ClientContext,
        request_id: str,
    ) -> int:
        """End the sessions the cookies name; how many were live (each one audited)."""
        ended = 0
        async with self._events.unit_of_work() as work:
            for session_id in (access_session, patient_session):
                row = await end_session(work.session, session_id, self._clock())
                if row is not None:
                    await self._record(work, row, client, request_id)
                    ended += 1
        return ended

    async def _record(
        self, work: UnitOfWork, row: BrowserSession, client: ClientContext, request_id: str
    ) -> None:
        correlation_id = f"sign-out-{request_id}"
        if row.kind == "patient":
            signed_out = SessionSignedOut(
                kind="patient", blume_patient_id=row.subject, client=client
            )
            traceparent = None
        else:
            link = await work.session.get(ProjectedLink, row.subject)
            signed_out = SessionSignedOut(
                kind="recipient",
                share_id=link.share_id if link else None,
                link_id=row.subject,
                client=client,
            )
            correlation_id = link.correlation_id if link else correlation_id
            traceparent = link.traceparent if link else None
        work.emit(
            "session.signed_out",
            signed_out,
            tenantid=row.tenant_id or UNKNOWN_TENANT,
            correlationid=correlation_id,
            traceparent=traceparent,
        )
