"""Saved gateway tokens encrypted at rest with the Fernet key derived from the store's secret key for this purpose
(:mod:`mercato.platform.keys`)."""

from __future__ import annotations

from mercato.platform.keys import fernet

PURPOSE = "saved-payment-methods"


def encrypt(secret: str, token: str) -> str:
    """Encrypt a gateway token (Fernet: AES-128-CBC + HMAC-SHA256, timestamped) with the key derived from
    ``secret``; returns URL-safe base64 text."""
    return fernet(secret, PURPOSE).encrypt(token.encode()).decode()


def decrypt(secret: str, ciphertext: str) -> str:
    """The token :func:`encrypt` sealed. Raises ``cryptography.fernet.InvalidToken`` if it was tampered with
    or sealed under another secret."""
    return fernet(secret, PURPOSE).decrypt(ciphertext.encode()).decode()
