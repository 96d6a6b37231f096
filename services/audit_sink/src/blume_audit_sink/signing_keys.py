"""The audit signing keys: Ed25519, generated, parsed (PEM or base64) and loaded from settings.

The signing key signs checkpoints (``BLUME_AUDIT_SIGNING_KEY`` / ``_FILE``, generated into
the state directory on the embedded default); the verify keys are the public keys of keys
rotated out, kept so older checkpoints still verify. A key is named by its ``key_id``: the
first 16 bytes (hex) of SHA-256 over the raw public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from blume_runtime.keyfiles import configured_secret, embedded_secret
from blume_runtime.settings import Settings
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from blume_audit_sink.settings import AuditSettings


class SigningKeyError(RuntimeError):
    pass


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(key)).hexdigest()[:32]


def public_key_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(_raw_public(key)).decode()


def new_private_key_text() -> str:
    """A fresh signing key as base64 of its 32-byte seed (what ``audit keygen`` prints)."""
    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return base64.b64encode(raw).decode()


def _decode_base64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise SigningKeyError(f"{what} is neither PEM nor base64") from error
    if len(raw) != 32:
        raise SigningKeyError(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


def private_key_from_text(text: str) -> Ed25519PrivateKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError("the audit signing key must be an Ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_decode_base64(text, "audit signing key"))


def public_key_from_text(text: str) -> Ed25519PublicKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError("audit verify keys must be Ed25519 public keys")
        return key
    return Ed25519PublicKey.from_public_bytes(_decode_base64(text, "audit verify key"))


def signing_key(settings: Settings, audit: AuditSettings) -> Ed25519PrivateKey | None:
    """The configured key; on the embedded default a generated one; otherwise None."""
    text = configured_secret(audit.audit_signing_key, audit.audit_signing_key_file)
    if text is None and settings.embedded_broker:
        text = embedded_secret(settings.state_dir / "audit-signing.key", new_private_key_text)
    return None if text is None else private_key_from_text(text)


def trusted_keys(settings: Settings, audit: AuditSettings) -> dict[str, Ed25519PublicKey]:
    """Keys whose checkpoints verify: the signing key's, and those kept from before rotation."""
    texts: list[str] = []
    if audit.audit_verify_keys:
        texts += audit.audit_verify_keys.split(",")
    if audit.audit_verify_keys_file is not None:
        texts += _key_blocks(audit.audit_verify_keys_file.read_text())
    keys = [public_key_from_text(text) for text in texts if text.strip()]
    private = signing_key(settings, audit)
    if private is not None:
        keys.append(private.public_key())
    return {key_id(key): key for key in keys}


def _key_blocks(text: str) -> list[str]:
    """One key per line, or PEM blocks; blank lines and ``#`` comments ignored."""
    if "-----BEGIN" in text:
        return [
            block + "-----END PUBLIC KEY-----"
            for block in text.split("-----END PUBLIC KEY-----")[:-1]
        ]
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
