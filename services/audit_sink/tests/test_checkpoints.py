"""Signed checkpoints on the embedded store: signing, files, cadence, key rotation, tampering."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from blume_audit_sink import signing_keys
from blume_audit_sink.append import append_entries
from blume_audit_sink.checkpoints import Cadence, checkpoint_chains
from blume_audit_sink.problems import ProblemKind
from blume_audit_sink.settings import AuditSettings
from blume_audit_sink.verify import VerifyReport, verify_store
from blume_contracts.audit_entry import prepare
from blume_runtime.db import Database
from blume_runtime.settings import Settings
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr
from sqlalchemy import text

TENANT = "demo-hospital"


def key_text() -> str:
    return signing_keys.new_private_key_text()


def production(signing: str, *verify: str) -> tuple[Settings, AuditSettings]:
    """Settings as on RabbitMQ: only configured keys count."""
    settings = Settings(amqp_url=SecretStr("amqp://unused/"))
    audit = AuditSettings(
        audit_signing_key=SecretStr(signing),
        audit_verify_keys=",".join(verify) or None,
    )
    return settings, audit


async def append_events(db: Database, make_event: Any, count: int, tenant: str = TENANT) -> None:
    for number in range(count):
        event = make_event("share.accepted", {"share_id": f"shr_{number:032x}"}, tenant=tenant)
        async with db.transaction() as session:
            await append_entries(session, [prepare(event)])


async def sign_now(db: Database, signing: str, directory: Path | None) -> list[Any]:
    async with db.transaction() as session:
        return await checkpoint_chains(
            session, signing_keys.private_key_from_text(signing), directory, cadence=None
        )


async def verified(
    db: Database, settings: Settings, audit: AuditSettings, *dirs: Path
) -> VerifyReport:
    async with db.transaction() as session:
        return await verify_store(session, settings, audit, checkpoint_dirs=dirs)


def kinds(report: VerifyReport) -> set[tuple[int, ProblemKind]]:
    return {(p.seq, p.kind) for p in report.problems}


def test_keys_load_from_base64_and_from_pem() -> None:
    """The signing key may be the base64 seed or a PKCS#8 PEM; both give the same key id."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    import base64

    from_pem = signing_keys.private_key_from_text(pem)
    from_b64 = signing_keys.private_key_from_text(base64.b64encode(raw).decode())
    assert signing_keys.key_id(from_pem.public_key()) == signing_keys.key_id(from_b64.public_key())
    with pytest.raises(signing_keys.SigningKeyError):
        signing_keys.private_key_from_text("bm90IGEga2V5")


def test_the_embedded_default_generates_its_key_once_readable_by_owner_only(
    tmp_path: Path,
) -> None:
    """Without configuration, the embedded default keeps a generated key (0600) and reuses it."""
    settings = Settings(state_dir=tmp_path / "state")
    first = signing_keys.signing_key(settings, AuditSettings())
    again = signing_keys.signing_key(settings, AuditSettings())
    assert first is not None
    assert again is not None
    assert signing_keys.key_id(first.public_key()) == signing_keys.key_id(again.public_key())
    mode = stat.S_IMODE(os.stat(tmp_path / "state" / "audit-signing.key").st_mode)
    assert mode == 0o600


def test_production_without_a_key_signs_nothing() -> None:
    """On RabbitMQ with no key configured there is no signing key (the sink warns)."""
    settings = Settings(amqp_url=SecretStr("amqp://unused/"))
    assert signing_keys.signing_key(settings, AuditSettings()) is None


async def test_a_checkpoint_is_signed_written_once_and_linked_to_the_previous(
    sqlite_db: Database, make_event: Any, tmp_path: Path
) -> None:
    """Each checkpoint file is read-only, signed, and names the digest of the one before."""
    signing = key_text()
    directory = tmp_path / "checkpoints"
    await append_events(sqlite_db, make_event, 3)
    (first,) = await sign_now(sqlite_db, signing, directory)
    await append_events(sqlite_db, make_event, 2)
    (second,) = await sign_now(sqlite_db, signing, directory)

    assert (first.seq, second.seq) == (3, 5)
    assert first.payload["previous"] is None
    assert second.payload["previous"] == first.digest
    assert second.payload["count"] == 5
    path = directory / TENANT / f"{5:015d}.json"
    assert json.loads(path.read_text())["payload"] == second.payload
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert await sign_now(sqlite_db, signing, directory) == []  # nothing new to pin
    report = await verified(sqlite_db, *production(signing), directory)
    assert (report.ok, report.checkpoints) == (True, 2)


async def test_cadence_signs_after_every_n_events(sqlite_db: Database, make_event: Any) -> None:
    """With every_events=4, three new records are not due and four are."""
    key = signing_keys.private_key_from_text(key_text())
    cadence = Cadence(every_events=4, every_seconds=3600)
    await append_events(sqlite_db, make_event, 3)
    async with sqlite_db.transaction() as session:
        assert await checkpoint_chains(session, key, None, cadence=cadence) == []
    await append_events(sqlite_db, make_event, 1)
    async with sqlite_db.transaction() as session:
        (made,) = await checkpoint_chains(session, key, None, cadence=cadence)
    assert made.seq == 4


async def test_cadence_signs_once_the_oldest_unpinned_record_is_old_enough(
    sqlite_db: Database, make_event: Any
) -> None:
    """With every_seconds=0, one unpinned record is already due."""
    key = signing_keys.private_key_from_text(key_text())
    await append_events(sqlite_db, make_event, 1)
    async with sqlite_db.transaction() as session:
        made = await checkpoint_chains(session, key, None, cadence=Cadence(1000, 0))
    assert [m.seq for m in made] == [1]


async def test_key_rotation_keeps_old_checkpoints_verifiable(
    sqlite_db: Database, make_event: Any, tmp_path: Path
) -> None:
    """After rotating keys, the old key's public half in verify keys keeps old checkpoints valid.

    Without it they are reported as signed by an untrusted key.
    """
    old, new = key_text(), key_text()
    old_public = signing_keys.public_key_text(signing_keys.private_key_from_text(old).public_key())
    directory = tmp_path / "checkpoints"
    await append_events(sqlite_db, make_event, 2)
    await sign_now(sqlite_db, old, directory)
    await append_events(sqlite_db, make_event, 2)
    (after_rotation,) = await sign_now(sqlite_db, new, directory)
    assert after_rotation.payload["previous"] is not None  # the chain of checkpoints goes on

    rotated = await verified(sqlite_db, *production(new, old_public), directory)
    assert (rotated.ok, rotated.checkpoints) == (True, 2)
    forgotten = await verified(sqlite_db, *production(new), directory)
    assert {(p.seq, p.kind) for p in forgotten.problems} >= {(2, ProblemKind.CHECKPOINT_INVALID)}
    assert "not trusted" in forgotten.problems[0].detail


async def test_a_cut_tail_with_its_head_fixed_up_is_caught_by_the_checkpoint_file(
    sqlite_db: Database, make_event: Any, tmp_path: Path
) -> None:
    """Rows and head cut back to seq 3 agree with each other; the signed file for 5 does not."""
    signing = key_text()
    directory = tmp_path / "checkpoints"
    await append_events(sqlite_db, make_event, 5)
    await sign_now(sqlite_db, signing, directory)
    async with sqlite_db.transaction() as session:
        for statement in (
            "DROP TRIGGER audit_records_guard_delete",
            "DROP TRIGGER audit_chain_heads_forward",
            "DROP TRIGGER audit_checkpoints_no_delete",
            "DELETE FROM audit_records WHERE seq > 3",
            "UPDATE audit_chain_heads SET seq = 3, "
            "hash = (SELECT hash FROM audit_records WHERE seq = 3)",
            "DELETE FROM audit_checkpoints",
        ):
            await session.exec(text(statement))

    without_files = await verified(sqlite_db, *production(signing))
    assert without_files.ok  # what the database alone says: consistent
    report = await verified(sqlite_db, *production(signing), directory)
    assert kinds(report) == {(4, ProblemKind.TRUNCATED)}


async def test_an_edited_or_removed_checkpoint_file_is_reported(
    sqlite_db: Database, make_event: Any, tmp_path: Path
) -> None:
    """A forged signature, a copy that differs from the database's, a removed link: all shown."""
    signing = key_text()
    directory = tmp_path / "checkpoints"
    for _ in range(3):
        await append_events(sqlite_db, make_event, 1)
        await sign_now(sqlite_db, signing, directory)
    folder = directory / TENANT
    last = folder / f"{3:015d}.json"
    original = last.read_text()
    forged = json.loads(original)
    forged["payload"]["head_hash"] = "f" * 64
    last.chmod(0o644)
    last.write_text(json.dumps(forged))
    report = await verified(sqlite_db, *production(signing), directory)
    assert (3, ProblemKind.CHECKPOINT_INVALID) in kinds(report)
    assert any("signature does not verify" in p.detail for p in report.problems)

    async with sqlite_db.transaction() as session:
        await session.exec(text("DROP TRIGGER audit_checkpoints_no_delete"))
        await session.exec(text("DELETE FROM audit_checkpoints WHERE seq = 2"))
    (folder / f"{2:015d}.json").unlink()
    last.write_text(original)
    report = await verified(sqlite_db, *production(signing), directory)
    broken_links = [p for p in report.problems if "link to the previous" in p.detail]
    assert [p.seq for p in broken_links] == [3]


async def test_the_database_refuses_to_change_or_remove_a_checkpoint(
    sqlite_db: Database, make_event: Any
) -> None:
    """Checkpoint rows are append-only too."""
    await append_events(sqlite_db, make_event, 1)
    await sign_now(sqlite_db, key_text(), None)
    for statement in ("UPDATE audit_checkpoints SET seq = 9", "DELETE FROM audit_checkpoints"):
        with pytest.raises(Exception, match="append-only"):
            async with sqlite_db.transaction() as session:
                await session.exec(text(statement))
