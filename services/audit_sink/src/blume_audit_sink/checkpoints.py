"""Signed checkpoints: Ed25519 statements of a chain's head, kept in the database and as files.

A checkpoint says "chain C had S records and its head hash was H", signed with the audit
signing key, and names the digest of the chain's previous checkpoint, so checkpoints form
their own chain. The files go to a directory meant for write-once storage (an S3 bucket
with object lock, a WORM volume); whoever controls the database cannot reach them, so a
rewritten or cut-off tail shows even when the hashes in the database were fixed up.

Document format (one JSON file per checkpoint, ``<chain>/<seq>.json``)::

    {"payload": {"version": 1, "chain_id": ..., "seq": ..., "head_hash": ..., "count": ...,
                 "created_at": ..., "key_id": ..., "previous": <digest or null>},
     "signature": <base64 Ed25519 signature over the canonical JSON of payload>}

``digest`` is SHA-256 (hex) of that same canonical JSON; ``key_id`` the first 16 bytes (hex)
of SHA-256 over the raw public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from blume_contracts.serialisation import canonical_json
from blume_runtime.db import as_utc, utcnow
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink.models import AuditChainHead, AuditCheckpoint, AuditRecord
from blume_audit_sink.problems import Problem, ProblemKind
from blume_audit_sink.signing_keys import key_id, public_key_text

DOCUMENT_VERSION: Final = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# ----------------------------------------------------------------------------- documents


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    payload: dict[str, Any]
    signature: str
    origin: str
    """Where it was read: ``database`` or a file path (for messages)."""

    @property
    def chain_id(self) -> str:
        return str(self.payload["chain_id"])

    @property
    def seq(self) -> int:
        return int(self.payload["seq"])

    @property
    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.payload).encode()).hexdigest()

    def document(self) -> str:
        return canonical_json({"payload": self.payload, "signature": self.signature})

    @classmethod
    def parse(cls, text: str, origin: str) -> SignedCheckpoint:
        loaded = json.loads(text)
        payload, signature = loaded["payload"], loaded["signature"]
        if not isinstance(payload, dict) or not isinstance(signature, str):
            raise ValueError("payload must be an object and signature a string")
        for name in ("chain_id", "seq", "head_hash", "count", "key_id"):
            if name not in payload:
                raise ValueError(f"payload lacks {name}")
        return cls(payload, signature, origin)


def sign(
    key: Ed25519PrivateKey,
    *,
    chain_id: str,
    seq: int,
    head_hash: str,
    previous: str | None,
    created_at: datetime,
) -> SignedCheckpoint:
    payload = {
        "version": DOCUMENT_VERSION,
        "chain_id": chain_id,
        "seq": seq,
        "head_hash": head_hash,
        # Seqs are gapless from 1, so the count of records ever appended equals the head's
        # seq; stated on its own so a reader needs no knowledge of the numbering.
        "count": seq,
        "created_at": as_utc(created_at).isoformat(),
        "key_id": key_id(key.public_key()),
        "previous": previous,
    }
    signature = key.sign(canonical_json(payload).encode())
    return SignedCheckpoint(payload, base64.b64encode(signature).decode(), "new")


def _file_name(chain_id: str) -> str:
    """The chain's folder: its id when that is a safe file name, else a hash of it."""
    if _SAFE_NAME.match(chain_id) and chain_id not in {".", ".."}:
        return chain_id
    return "sha256-" + hashlib.sha256(chain_id.encode()).hexdigest()


def write_file(directory: Path, checkpoint: SignedCheckpoint) -> Path:
    """Write once: never overwrite; flushed to disk and made read-only before returning."""
    folder = directory / _file_name(checkpoint.chain_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{checkpoint.seq:015d}.json"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(checkpoint.document() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path


def publish_public_key(directory: Path, key: Ed25519PublicKey) -> None:
    """Leave the public key beside the checkpoints it signs (for ops; never trusted blindly)."""
    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    path = keys / f"{key_id(key)}.pub"
    if not path.exists():
        path.write_text(public_key_text(key) + "\n")


def read_directory(directory: Path) -> tuple[list[SignedCheckpoint], list[Problem]]:
    """Every checkpoint file under ``directory``; unreadable ones become problems."""
    found: list[SignedCheckpoint] = []
    problems: list[Problem] = []
    for path in sorted(directory.glob("*/*.json")):
        try:
            found.append(SignedCheckpoint.parse(path.read_text(encoding="utf-8"), str(path)))
        except (OSError, ValueError, KeyError, TypeError) as error:
            seq = int(path.stem) if path.stem.isdigit() else 0
            problems.append(
                Problem(
                    path.parent.name,
                    seq,
                    ProblemKind.CHECKPOINT_INVALID,
                    f"{path} is not a checkpoint document ({type(error).__name__})",
                )
            )
    return found, problems


async def read_database(session: AsyncSession) -> list[SignedCheckpoint]:
    statement = select(AuditCheckpoint.document).order_by(
        col(AuditCheckpoint.chain_id), col(AuditCheckpoint.seq)
    )
    return [
        SignedCheckpoint.parse(document, "database")
        for document in (await session.exec(statement)).all()
    ]


# ----------------------------------------------------------------------------- validating


@dataclass(slots=True)
class Validated:
    pins: dict[str, dict[int, str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    count: int = 0


def _invalid(checkpoint: SignedCheckpoint, detail: str) -> Problem:
    return Problem(
        checkpoint.chain_id,
        checkpoint.seq,
        ProblemKind.CHECKPOINT_INVALID,
        f"checkpoint from {checkpoint.origin}: {detail}",
    )


def _signature_problem(
    checkpoint: SignedCheckpoint, keys: Mapping[str, Ed25519PublicKey]
) -> str | None:
    key = keys.get(str(checkpoint.payload["key_id"]))
    if key is None:
        return f"signed by key {checkpoint.payload['key_id']}, which is not trusted"
    try:
        key.verify(
            base64.b64decode(checkpoint.signature),
            canonical_json(checkpoint.payload).encode(),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        return "signature does not verify"
    return None


def validate(
    checkpoints: Iterable[SignedCheckpoint], keys: Mapping[str, Ed25519PublicKey]
) -> Validated:
    """Signatures, agreement between copies, and the link from each to an earlier one.

    Every checkpoint but a chain's first names the digest of an earlier checkpoint of the
    chain, so one deleted from the middle shows; of the copies (database, files) of one
    seq, all must be the same document.
    """
    result = Validated()
    by_seat: dict[tuple[str, int], SignedCheckpoint] = {}
    for checkpoint in checkpoints:
        problem = _signature_problem(checkpoint, keys)
        if problem is not None:
            result.problems.append(_invalid(checkpoint, problem))
            continue
        seat = (checkpoint.chain_id, checkpoint.seq)
        known = by_seat.setdefault(seat, checkpoint)
        if known.digest != checkpoint.digest:
            result.problems.append(_invalid(checkpoint, f"differs from the copy in {known.origin}"))
    chains: dict[str, list[SignedCheckpoint]] = {}
    for checkpoint in by_seat.values():
        chains.setdefault(checkpoint.chain_id, []).append(checkpoint)
    for chain_id, chain in chains.items():
        chain.sort(key=lambda checkpoint: checkpoint.seq)
        digests = {checkpoint.digest: checkpoint.seq for checkpoint in chain}
        for position, checkpoint in enumerate(chain):
            previous = checkpoint.payload.get("previous")
            linked = (
                previous is None
                if position == 0
                else previous in digests and digests[previous] < checkpoint.seq
            )
            if not linked:
                result.problems.append(
                    _invalid(
                        checkpoint,
                        "its link to the previous checkpoint is broken "
                        "(a checkpoint was removed or forged)",
                    )
                )
            result.pins.setdefault(chain_id, {})[checkpoint.seq] = str(
                checkpoint.payload["head_hash"]
            )
            result.count += 1
    return result


# ------------------------------------------------------------------------------- writing


@dataclass(frozen=True, slots=True)
class Cadence:
    """Checkpoint a chain once this many records, or this much time, are not yet pinned."""

    every_events: int
    every_seconds: float


async def _latest(session: AsyncSession, chain_id: str) -> AuditCheckpoint | None:
    statement = (
        select(AuditCheckpoint)
        .where(col(AuditCheckpoint.chain_id) == chain_id)
        .order_by(col(AuditCheckpoint.seq).desc())
        .limit(1)
    )
    return (await session.exec(statement)).first()


async def _oldest_unpinned_at(session: AsyncSession, chain_id: str, after: int) -> datetime | None:
    statement = select(func.min(AuditRecord.recorded_at)).where(
        col(AuditRecord.chain_id) == chain_id, col(AuditRecord.seq) == after + 1
    )
    found = (await session.exec(statement)).first()
    return None if found is None else as_utc(found)


def _due(head_seq: int, latest_seq: int, oldest: datetime | None, cadence: Cadence | None) -> bool:
    if head_seq <= latest_seq:
        return False
    if cadence is None:  # forced: pin whatever is not pinned yet
        return True
    if head_seq - latest_seq >= cadence.every_events:
        return True
    return oldest is not None and utcnow() - oldest >= timedelta(seconds=cadence.every_seconds)


async def checkpoint_chains(
    session: AsyncSession,
    key: Ed25519PrivateKey,
    directory: Path | None,
    *,
    cadence: Cadence | None,
    chain_id: str | None = None,
) -> list[SignedCheckpoint]:
    """Sign the head of every chain (or one) that is due; ``cadence=None`` forces it.

    The head row is locked while its checkpoint is made, so two processes never sign two
    different successors of one checkpoint. The file is written before the row: a failed
    write leaves no checkpoint the directory lacks.
    """
    statement = select(AuditChainHead.chain_id).where(col(AuditChainHead.seq) > 0)
    if chain_id is not None:
        statement = statement.where(col(AuditChainHead.chain_id) == chain_id)
    made: list[SignedCheckpoint] = []
    for chain in sorted((await session.exec(statement)).all()):
        head = (
            await session.exec(
                select(AuditChainHead)
                .where(col(AuditChainHead.chain_id) == chain)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).one()
        latest = await _latest(session, chain)
        latest_seq = latest.seq if latest is not None else 0
        oldest = await _oldest_unpinned_at(session, chain, latest_seq)
        if not _due(head.seq, latest_seq, oldest, cadence):
            continue
        checkpoint = sign(
            key,
            chain_id=chain,
            seq=head.seq,
            head_hash=head.hash,
            previous=latest.digest if latest is not None else None,
            created_at=utcnow(),
        )
        if directory is not None:
            publish_public_key(directory, key.public_key())
            write_file(directory, checkpoint)
        session.add(
            AuditCheckpoint(
                chain_id=chain,
                seq=checkpoint.seq,
                head_hash=head.hash,
                count=checkpoint.seq,
                created_at=datetime.fromisoformat(str(checkpoint.payload["created_at"])),
                key_id=str(checkpoint.payload["key_id"]),
                previous_digest=latest.digest if latest is not None else None,
                digest=checkpoint.digest,
                document=checkpoint.document(),
            )
        )
        await session.flush()
        made.append(checkpoint)
    return made
