"""What verification finds: one ``Problem`` per break, of a ``ProblemKind``.

Both the chain walk (``verify``) and the checkpoint checks (``checkpoints``) report in these
terms, so they live below both.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. ``detail`` holds sequence numbers and hashes only, never PHI."""

    chain_id: str
    seq: int
    kind: ProblemKind
    detail: str


class ProblemKind(StrEnum):
    HASH_MISMATCH = "hash_mismatch"
    """The row's columns no longer produce its hash: it was edited."""
    BROKEN_LINK = "broken_link"
    """The row's prev_hash is not the previous row's hash: rows inserted, deleted or moved."""
    SEQ_GAP = "seq_gap"
    """The row's seq does not follow the previous row's."""
    HEAD_MISMATCH = "head_mismatch"
    """The head disagrees with the chain's last row: rows cut off the end, or head edited."""
    MISSING_HEAD = "missing_head"
    """The chain has rows but no head."""
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    """A signed checkpoint pins another hash at this seq: the rows up to it were rewritten."""
    TRUNCATED = "truncated"
    """A signed checkpoint vouches for rows that are gone: the tail was cut off."""
    CHECKPOINT_INVALID = "checkpoint_invalid"
    """A checkpoint's signature, key or link to the previous checkpoint does not hold."""
    PURGE_UNANCHORED = "purge_unanchored"
    """Rows were removed as purged, but no valid checkpoint vouches for where they ended."""
