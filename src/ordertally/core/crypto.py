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
        self._master = master_key
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

    def derive_key(self, purpose: str) -> bytes:
        """A key of its own for another keyed use of the same master (search tokens)."""
        return _derive(self._master, f"ordertally {purpose}".encode())

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


# A raw platform body sealed at rest (ADR 0030); anything else in a body column is a row written
# before bodies were sealed (read as it is) or one emptied after its retention period.
SEALED_PREFIX = "aesgcm:"


def body_context(table: str, *row_key: str) -> str:
    """Associated data of an inbox body: its table.column and the row's dedupe key, so a body
    copied to another row or column does not decrypt."""
    return ":".join((f"{table}.body", *row_key))


def seal_body(text: str, context: str) -> str:
    """Encrypt a raw platform body for an inbox column (empty stays empty)."""
    if not text:
        return text
    return SEALED_PREFIX + get_cipher().encrypt(text, context)


def open_body(stored: str, context: str) -> str:
    """A stored inbox body in clear: decrypted if sealed, as it is otherwise."""
    if not stored.startswith(SEALED_PREFIX):
        return stored
    return get_cipher().decrypt(stored[len(SEALED_PREFIX) :], context)
