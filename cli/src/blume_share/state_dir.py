"""The embedded default's state directory holds PHI (the SQLite database, dropped emails,
logs) and keys: only its owner may enter it, and the files in it are the owner's alone.

The directory is made 0700 whenever a command uses it, so an older one left 0755 is closed
too. The database is created 0600 before SQLite first opens it: SQLite gives its ``-wal``
and ``-shm`` files the database file's own permissions. Logs and dropped emails are
created 0600 where they are written; keys already are. No process-wide umask is set, as the
test suite runs these commands in its own process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from blume_runtime.settings import Settings

PRIVATE_DIRECTORY: Final = 0o700
PRIVATE_FILE: Final = 0o600
DATABASE_FILE: Final = "blume-share.db"


def private_directory(path: Path) -> Path:
    """``path`` (and missing parents) created if needed, then made owner-only."""
    path.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
    path.chmod(PRIVATE_DIRECTORY)
    return path


def private_file(path: Path) -> None:
    """``path`` created empty if missing (never truncated), owner read/write only."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    os.close(descriptor)
    path.chmod(PRIVATE_FILE)


def secure_state_dir(settings: Settings) -> None:
    """On the embedded default, close the state directory and its SQLite files to others."""
    if not settings.embedded_database and not settings.embedded_broker:
        return
    state = private_directory(settings.state_dir)
    if settings.embedded_database:
        database = state / DATABASE_FILE
        private_file(database)
        for companion in (state / f"{DATABASE_FILE}-wal", state / f"{DATABASE_FILE}-shm"):
            if companion.exists():
                companion.chmod(PRIVATE_FILE)
