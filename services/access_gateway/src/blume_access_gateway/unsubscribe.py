"""One-click unsubscribe from Blume emails (RFC 8058): the token in a Blume email's
``List-Unsubscribe`` URL is sealed by the notifier (``UnsubscribeClaims``: the patient and
tenant, nothing a reader of the URL can see). A POST, with no cookie and no CSRF token as
the RFC requires of mail clients, records ``patient.notifications.unsubscribed``;
blume_publisher, the account's owner, switches the emails off. A GET changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from blume_contracts.events import ClientContext, PatientNotificationsUnsubscribed
from blume_contracts.tokens import UnsubscribeClaims
from blume_runtime.sealing import Sealer
from blume_runtime.unit_of_work import UnitsOfWork


class Unsubscribe:
    def __init__(self, events: UnitsOfWork, sealer: Sealer, clock: Callable[[], datetime]) -> None:
        self._events = events
        self._sealer = sealer
        self._clock = clock

    def claims(self, token: str) -> UnsubscribeClaims | None:
        """Whose emails the token switches off; None for anything we did not seal."""
        try:
            return UnsubscribeClaims.from_text(self._sealer.unseal(token))
        except ValueError:
            return None

    async def unsubscribe(
        self, claims: UnsubscribeClaims, client: ClientContext, request_id: str
    ) -> None:
        async with self._events.unit_of_work() as work:
            work.emit(
                "patient.notifications.unsubscribed",
                PatientNotificationsUnsubscribed(
                    blume_patient_id=claims.blume_patient_id,
                    tenant_id=claims.tenant_id,
                    unsubscribed_at=self._clock(),
                    client=client,
                ),
                tenantid=claims.tenant_id,
                correlationid=f"unsubscribe-{request_id}",
            )
