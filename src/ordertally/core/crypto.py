"""PII protection: AES-GCM encryption bound to its row, and a keyed blind index for lookups."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ordertally.core.settings import get_settings


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master)


class PiiCipher:
    """Encrypts personal data; the key id prefix allows rotation without rewriting rows."""

    def __init__(self, master_key: bytes, key_id: str) -> None:
        self.key_id = key_id
        self._aead = AESGCM(_derive(master_key, b"ordertally pii encryption v1"))
        self._index_key = _derive(master_key, b"ordertally pii blind index v1")

    def encrypt(self, plaintext: str, context: str) -> str:
        """Encrypt with a random 96-bit nonce; `context` (table.column) is associated data."""
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self.key_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, context: str) -> str:
        """Decrypt a value written by `encrypt` with the same context."""
        key_id, _, blob = token.partition(":")
        if key_id != self.key_id:
            raise ValueError(f"PII key {key_id!r} is not loaded")
        raw = base64.b64decode(blob)
        return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()

    def blind_index(self, value: str, purpose: str) -> str:
        """Keyed hash for exact-match lookup without storing the value."""
        digest = hmac.new(self._index_key, f"{purpose}:{value}".encode(), hashlib.sha256)
        return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def get_cipher() -> PiiCipher:
    """The process-wide cipher built from settings."""
    settings = get_settings()
    return PiiCipher(settings.pii_key_bytes(), settings.pii_key_id)


def reset_cipher() -> None:
    """Forget the cached cipher (tests, key rotation)."""
    get_cipher.cache_clear()
