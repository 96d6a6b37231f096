"""Sealing secrets in transit: a link token may exist only in the event carrying it to the
notifier and in the email. Anything that touches a disk (the outbox, the audit store) sees
only ciphertext; a compromised database yields no usable link."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from blume_runtime.keyfiles import configured_secret, embedded_secret
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
        raw = configured_secret(settings.token_sealing_key, settings.token_sealing_key_file)
        if raw is None and settings.embedded_broker:
            raw = embedded_secret(
                settings.state_dir / "sealing.key", lambda: Fernet.generate_key().decode()
            )
        if raw is None:
            raise SealingKeyError(
                "set BLUME_TOKEN_SEALING_KEY or BLUME_TOKEN_SEALING_KEY_FILE "
                "(generate one with: blume-share keygen)"
            )
        return cls([key.strip().encode() for key in raw.split(",") if key.strip()])
