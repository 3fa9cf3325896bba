"""Secrets derived from the store's secret key: the Fernet key that encrypts saved gateway tokens at rest and
per-purpose HMAC keys (HKDF-SHA256, RFC 5869, from ``cryptography``)."""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def _derive(secret: str, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(secret.encode())


def derived_secret(secret: str, purpose: str) -> str:
    """A 64-hex-character key for ``purpose``, derived from ``secret`` (independent keys per purpose)."""
    return _derive(secret, purpose).hex()


@lru_cache(maxsize=8)
def _fernet(secret: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(_derive(secret, "saved-payment-methods")))


def encrypt(secret: str, token: str) -> str:
    """Encrypt a gateway token (Fernet: AES-128-CBC + HMAC-SHA256, timestamped) with the key derived from
    ``secret``; returns URL-safe base64 text."""
    return _fernet(secret).encrypt(token.encode()).decode()


def decrypt(secret: str, ciphertext: str) -> str:
    """The token :func:`encrypt` sealed. Raises ``cryptography.fernet.InvalidToken`` if it was tampered with
    or sealed under another secret."""
    return _fernet(secret).decrypt(ciphertext.encode()).decode()
