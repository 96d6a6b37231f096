"""The dispatcher's share writes as single statements, on SQLite and PostgreSQL alike: the
state machine checked in the UPDATE itself, counters and times kept as the handlers did."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import PatientAccountUpdated
from blume_runtime.db import Database
from blume_share.schema import upgrade
from blume_share_dispatcher import shares
from blume_share_dispatcher.accounts import SqlPatientDirectory, apply_account
from blume_share_dispatcher.models import Share, ShareState

from services.share_dispatcher.tests.test_account_projection import MRN, TENANT, account_updated

T1 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
T2 = T1 + timedelta(minutes=5)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, state_dir: Path) -> str:
    """A migrated database of each kind the dispatcher runs on."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("migrated_database_url"))
    state_dir.mkdir(parents=True, exist_ok=True)
    sqlite_url = f"sqlite:///{state_dir / 'shares.db'}"
    upgrade(sqlite_url)
    return sqlite_url


@pytest.fixture
async def db(url: str) -> AsyncIterator[Database]:
    database = Database(url)
    yield database
    await database.dispose()


def share(share_id: str, state: ShareState, **columns: Any) -> Share:
    values: dict[str, Any] = {
        "share_id": share_id,
        "tenant_id": TENANT,
        "method": "external_link",
        "state": state,
        "correlation_id": f"corr-{share_id}",
        "request_source": "/omegaai",
        "request_id": f"req-{share_id}",
        "patient_mrn": MRN,
        **columns,
    }
    return Share(**values)


async def stored(db: Database, share_id: str) -> Share:
    async with db.transaction() as session:
        found = await session.get(Share, share_id)
    assert found is not None
    return found


async def add(db: Database, *new: Share) -> None:
    async with db.transaction() as session:
        for one in new:
            await shares.add(session, one)


async def test_a_move_happens_only_from_a_state_that_may_become_the_new_one(db: Database) -> None:
    """accepted -> completed sets the given columns and returns the share as it now is; a
    completed share asked to become link_issued (a late event) is left as it was."""
    await add(db, share("s1", ShareState.ACCEPTED))
    async with db.transaction() as session:
        moved = await shares.move(
            session, "s1", ShareState.COMPLETED, notification_message_id="<m@x>", reason=None
        )
        late = await shares.move(session, "s1", ShareState.LINK_ISSUED)
        unknown = await shares.move(session, "nope", ShareState.COMPLETED)
    assert moved is not None
    assert (moved.state, moved.notification_message_id) == (ShareState.COMPLETED, "<m@x>")
    assert (late, unknown) == (None, None)
    assert (await stored(db, "s1")).state == ShareState.COMPLETED


async def test_only_the_shares_own_tenant_revokes_it(db: Database) -> None:
    """Another tenant's revocation changes nothing; the owner's revokes, reason revoked."""
    await add(db, share("s1", ShareState.COMPLETED))
    async with db.transaction() as session:
        refused = await shares.revoke(session, "s1", "elsewhere")
        revoked = await shares.revoke(session, "s1", TENANT)
        again = await shares.revoke(session, "s1", TENANT)
        owner = await shares.owner(session, "s1")
    assert refused is None
    assert revoked is not None
    assert (revoked.state, revoked.reason) == (ShareState.REVOKED, "revoked")
    assert again is None
    assert owner == (TENANT, ShareState.REVOKED)


async def test_waiting_keeps_the_earliest_failure_whatever_order_the_notices_come_in(
    db: Database,
) -> None:
    """A notice with a later first failure keeps the earlier start; one with an earlier start
    moves it back; the reason is always the newest notice's error class."""
    await add(db, share("s1", ShareState.LINK_ISSUED))
    async with db.transaction() as session:
        await shares.wait(session, "s1", "smtp_unavailable", T2)
        await shares.wait(session, "s1", "database_unavailable", T2 + timedelta(minutes=1))
    waiting = await stored(db, "s1")
    assert (waiting.state, waiting.reason, waiting.waiting_since) == (
        ShareState.WAITING,
        "database_unavailable",
        T2,
    )
    async with db.transaction() as session:
        await shares.wait(session, "s1", "smtp_unavailable", T1)
    assert (await stored(db, "s1")).waiting_since == T1


async def test_link_use_counts_keep_the_first_open_and_the_latest_times(db: Database) -> None:
    """Opens arriving out of order: counted each, the first seen stays first_opened_at, the
    latest moment is last_opened_at; an access likewise keeps the latest."""
    await add(db, share("s1", ShareState.COMPLETED))
    async with db.transaction() as session:
        await shares.count_open(session, "s1", T2)
        opened = await shares.count_open(session, "s1", T1)
        await shares.count_access(session, "s1", T2)
        accessed = await shares.count_access(session, "s1", T1)
        unknown = await shares.count_open(session, "nope", T1)
    assert opened is not None
    assert accessed is not None
    assert (opened.opened_count, opened.first_opened_at, opened.last_opened_at) == (2, T2, T2)
    assert (accessed.accessed_count, accessed.last_accessed_at) == (2, T2)
    assert unknown is None


async def test_a_lock_box_revokes_only_live_shares_of_the_withheld_methods(db: Database) -> None:
    """Live link shares of the patient are revoked (in share id order); a rejected one, a
    Blume one and another patient's are left alone."""
    await add(
        db,
        share("s2", ShareState.COMPLETED),
        share("s1", ShareState.ACCEPTED),
        share("s3", ShareState.REJECTED),
        share("s4", ShareState.PUBLISHED, method="blume"),
        share("s5", ShareState.ACCEPTED, patient_mrn="MRN-0002"),
    )
    async with db.transaction() as session:
        revoked = await shares.revoke_live(
            session, TENANT, MRN, ["external_link"], "consent_directive"
        )
    assert [one.share_id for one in revoked] == ["s1", "s2"]
    states = {share_id: (await stored(db, share_id)).state for share_id in ("s3", "s4", "s5")}
    assert states == {
        "s3": ShareState.REJECTED,
        "s4": ShareState.PUBLISHED,
        "s5": ShareState.ACCEPTED,
    }


async def test_the_directory_sees_an_account_projected_earlier_in_the_same_transaction(
    db: Database,
) -> None:
    """An account written (not yet flushed) by an earlier handler of the same batch is what
    the next request's consent check reads."""
    announced = account_updated("acc-1", lock_box=True, at=T1)
    event = CloudEvent[PatientAccountUpdated].model_validate(announced)
    async with db.transaction() as session:
        assert await apply_account(session, event)
        directory = SqlPatientDirectory(session)
        [account] = await directory.accounts_for_mrn(TENANT, MRN)
        found = await directory.account(TENANT, "bp-0001")
        elsewhere = await directory.account("elsewhere", "bp-0001")
    assert account.withhold_external_links
    assert found is not None
    assert found.active
    assert elsewhere is None
