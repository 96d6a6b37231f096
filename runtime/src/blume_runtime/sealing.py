"""Sealing secrets in transit: a link token may exist only in the event carrying it to the
notifier and in the email. Anything that touches a disk (the outbox, the audit store) sees
only ciphertext; a compromised database yields no usable link."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from blume_runtime.settings import Settings


class SealingKeyError(RuntimeError):
    pass


class Sealer:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SealingKeyError("no sealing key configured")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def unseal(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as error:
            raise ValueError("sealed value cannot be opened with the configured keys") from error

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer:
        if settings.token_sealing_key is not None:
            raw = settings.token_sealing_key.get_secret_value()
        elif settings.token_sealing_key_file is not None:
            raw = settings.token_sealing_key_file.read_text().strip()
        elif settings.embedded_broker:
            raw = _embedded_key(settings.state_dir / "sealing.key")
        else:
            raise SealingKeyError(
                "set BLUME_TOKEN_SEALING_KEY or BLUME_TOKEN_SEALING_KEY_FILE "
                "(generate one with: blume-share keygen)"
            )
        return cls([key.strip().encode() for key in raw.split(",") if key.strip()])


def _embedded_key(path: Path) -> str:
    """The embedded default keeps a generated key beside its SQLite file (mode 0600)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(Fernet.generate_key().decode())
    return path.read_text().strip()
