"""Keys derived from the store's secret key (``MERCATO_SECRET_KEY``), one independent key per purpose
(HKDF-SHA256, RFC 5869, from ``cryptography``): HMAC keys and Fernet keys for data sealed at rest (saved gateway
tokens, stored idempotent responses)."""

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


@lru_cache(maxsize=16)
def fernet(secret: str, purpose: str) -> Fernet:
    """The Fernet (AES-128-CBC + HMAC-SHA256, timestamped tokens) whose key is derived from ``secret`` for
    ``purpose``. Its ``decrypt`` raises ``cryptography.fernet.InvalidToken`` for data sealed under another secret
    or purpose, or altered."""
    return Fernet(base64.urlsafe_b64encode(_derive(secret, purpose)))
