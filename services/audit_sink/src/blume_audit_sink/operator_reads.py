"""Reads of PHI through the command line, recorded like the compliance API's (PHIPA wants
a record of every view, whatever the interface).

The CLI reads the database directly, so it appends its own record, in the transaction of
the read: who ran it (the OS account as the OS reports it, always; ``BLUME_OPERATOR`` when
set, marked as self-asserted; the host), the command, its filters and how many records it
returned. Reads of the audit trail are ``ops.audit_log.read``; reads of shares and patient
accounts ``ops.records.read``. A read that names no tenant goes to the operators' chain.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Final

from blume_contracts.audit_entry import prepare
from blume_contracts.envelope import RawEvent, now
from blume_runtime.dead_letters import OPS_TENANT, Operator
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink.append import append_entries

CLI_SOURCE: Final = "/blume-share/cli"
AUDIT_LOG_READ_TYPE: Final = "ops.audit_log.read"
RECORDS_READ_TYPE: Final = "ops.records.read"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


async def record_operator_read(
    session: AsyncSession,
    *,
    event_type: str,
    operator: Operator,
    command: str,
    tenant: str | None,
    filters: dict[str, Any],
    returned: int,
    patient_mrn: str | None = None,
) -> None:
    """Append the record of one read, in the caller's transaction; ``patient_mrn`` names
    the patient read about when the filters do not."""
    given = {name: _plain(value) for name, value in filters.items() if value is not None}
    data: dict[str, Any] = {
        "command": command,
        "requested_by": operator.os_user,
        "asserted_operator": operator.asserted,
        "operator_assertion": "self-asserted (BLUME_OPERATOR), not verified"
        if operator.asserted
        else None,
        "host": operator.host,
        "filters": given,
        "returned": returned,
    }
    # Top-level ids let ``audit query --patient``/``--share-id`` find who looked.
    for name in ("share_id", "patient_mrn"):
        if isinstance(given.get(name), str):
            data[name] = given[name]
    if patient_mrn is not None:
        data["patient_mrn"] = patient_mrn
    event = RawEvent(
        id=str(uuid.uuid4()),
        source=CLI_SOURCE,
        type=event_type,
        time=now(),
        tenantid=tenant or OPS_TENANT,
        correlationid=str(uuid.uuid4()),
        data={name: value for name, value in data.items() if value is not None},
    )
    await append_entries(session, [prepare(event)])
