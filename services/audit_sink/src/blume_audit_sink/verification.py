"""``audit verify`` in full: the checkpoints (database copies and files), then the chains."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from blume_runtime.settings import Settings
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink import checkpoints
from blume_audit_sink.chain import VerifyReport, verify
from blume_audit_sink.sealer import pending_count
from blume_audit_sink.settings import AuditSettings


async def verify_store(
    session: AsyncSession,
    settings: Settings,
    audit: AuditSettings,
    *,
    chain_id: str | None = None,
    checkpoint_dirs: Sequence[Path] = (),
) -> VerifyReport:
    """Check every checkpoint's signature and links, then walk the chains against them.

    The database's copies are always read; each directory adds the files found there (the
    write-once copies, or an export of them). A checkpoint anyone could delete from the
    database still counts if its file is given.
    """
    found = await checkpoints.read_database(session)
    file_problems = []
    for directory in checkpoint_dirs:
        from_files, unreadable = checkpoints.read_directory(directory)
        found += from_files
        file_problems += unreadable
    if chain_id is not None:
        found = [checkpoint for checkpoint in found if checkpoint.chain_id == chain_id]
    validated = checkpoints.validate(found, checkpoints.trusted_keys(settings, audit))
    report = await verify(session, chain_id, pins=validated.pins)
    report.problems = [
        *(p for p in file_problems if chain_id is None or p.chain_id == chain_id),
        *validated.problems,
        *report.problems,
    ]
    report.checkpoints = validated.count
    report.pending = await pending_count(session)
    return report
