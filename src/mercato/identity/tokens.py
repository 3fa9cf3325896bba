"""Access tokens (PyJWT, HS256) and opaque tokens.

Access tokens carry ``iss``, ``aud``, ``sub`` (user id), ``sid`` (auth session id), ``jti``, ``iat`` and ``exp``
(RFC 7519), and a ``kid`` header naming the signing key (a digest of the secret, so a rotated secret is
recognisable). Decoding accepts only HS256 with every claim present: ``alg: none``, other algorithms, a wrong
audience or issuer, or an expired token are all rejected. Opaque tokens (refresh, emailed, API keys) are 256-bit
random strings stored only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import jwt

ISSUER = "mercato"
AUDIENCE = "mercato-api"
ALGORITHM = "HS256"


@dataclass(frozen=True)
class AccessClaims:
    """The verified content of an access token."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: int


def key_id(secret: str) -> str:
    """A short public identifier of the signing secret."""
    return hashlib.sha256(b"mercato-kid:" + secret.encode()).hexdigest()[:16]


def issue_access_token(secret: str, *, user_id: uuid.UUID, session_id: uuid.UUID, now: datetime, ttl: int) -> str:
    """Sign an access token valid for ``ttl`` seconds from ``now``."""
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(user_id),
        "sid": str(session_id),
        "jti": uuid.uuid4().hex,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl)).timestamp()),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM, headers={"kid": key_id(secret)})


def decode_access_token(secret: str, token: str, *, now: float | None = None) -> AccessClaims | None:
    """Verify ``token``; returns its claims, or ``None`` when it is invalid in any way or expired at ``now``
    (Unix seconds; the current time by default).

    A verified token is remembered (LRU, 20,000 entries) so that a client's repeated requests cost one
    signature check; expiry is checked again on every call.
    """
    claims = _verify(secret, token)
    if claims is None or claims.expires_at <= (time.time() if now is None else now):
        return None
    return claims


@lru_cache(maxsize=20_000)
def _verify(secret: str, token: str) -> AccessClaims | None:
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "sid", "iss", "aud", "jti"]},
        )
        return AccessClaims(uuid.UUID(payload["sub"]), uuid.UUID(payload["sid"]), int(payload["exp"]))
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None


def new_opaque_token(prefix: str = "") -> str:
    """A URL-safe random token with 256 bits of entropy."""
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """SHA-256 hex digest under which an opaque token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()
