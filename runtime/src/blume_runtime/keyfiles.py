"""Where a worker's keys come from: the environment, a mounted file, or (embedded default
only) a file generated once beside the SQLite database. Never from the repository."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr


def configured_secret(value: SecretStr | None, file: Path | None) -> str | None:
    """The secret given in the environment, else in the mounted file, else None."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return file.read_text().strip()
    return None


def embedded_secret(path: Path, generate: Callable[[], str]) -> str:
    """A secret generated on first use and kept readable by its owner only (mode 0600)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of the embedded default generated it first
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(generate())
    return path.read_text().strip()
