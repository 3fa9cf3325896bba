"""Identity tables: users, auth sessions and their refresh tokens, one-time user tokens, API keys, OIDC
identities and addresses."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mercato.db.base import Base, TimestampMixin, uuid_pk
from mercato.platform import clock


class Role(StrEnum):
    """Roles of API.md §2. ``admin`` may do everything."""

    customer = "customer"
    vendor = "vendor"
    sales = "sales"
    procurement = "procurement"
    admin = "admin"


#: The roles an API key may hold. A key acts for no user, so a ``customer`` or ``vendor`` key would have no own
#: data to act on, and every "own products" check would compare against no vendor at all.
API_KEY_ROLES = frozenset({Role.sales, Role.procurement, Role.admin})


class TokenPurpose(StrEnum):
    """What a one-time :class:`UserToken` allows."""

    verify_email = "verify_email"
    reset_password = "reset_password"  # noqa: S105 - a purpose name; also staff invitations

    change_email = "change_email"


class User(TimestampMixin, Base):
    """A person with an account. ``email`` is stored lower-cased and unique; ``password_hash`` is argon2id
    (``None`` for accounts that only sign in through OIDC or have not accepted an invitation yet).
    Deletion anonymises personal fields and sets ``deleted_at``; orders keep pointing at the row."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = uuid_pk()
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(40))
    role: Mapped[str] = mapped_column(String(20), default=Role.customer, index=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None]


class AuthSession(Base):
    """One sign-in (a refresh-token family). Revoking it invalidates its access tokens at once."""

    __tablename__ = "auth_sessions"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    method: Mapped[str] = mapped_column(String(20))  # password | oidc:<provider> | register
    user_agent: Mapped[str | None] = mapped_column(String(300))
    ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    last_used_at: Mapped[datetime] = mapped_column(default=clock.now)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoke_reason: Mapped[str | None] = mapped_column(String(40))


class RefreshToken(Base):
    """An opaque refresh token, stored as its SHA-256. ``rotated_at`` is set when it has been exchanged; a
    second exchange is reuse and revokes the whole session (OAuth 2.0 Security BCP, RFC 9700 §4.14.2)."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = uuid_pk()
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    rotated_at: Mapped[datetime | None]


class UserToken(Base):
    """A single-use emailed token (verification, reset or invitation, email change), stored as its SHA-256."""

    __tablename__ = "user_tokens"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class ApiKey(Base):
    """A service-to-service credential (source 003) acting with ``role``; only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    revoked_at: Mapped[datetime | None]


class OidcIdentity(Base):
    """Links an OIDC provider's subject to a user."""

    __tablename__ = "oidc_identities"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(50))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class Address(TimestampMixin, Base):
    """A postal address of a user; ``country`` is ISO 3166-1 alpha-2."""

    __tablename__ = "addresses"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str | None] = mapped_column(String(50))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    line1: Mapped[str] = mapped_column(String(200))
    line2: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(100))
    region: Mapped[str | None] = mapped_column(String(100))
    postal_code: Mapped[str | None] = mapped_column(String(20))
    country: Mapped[str] = mapped_column(String(2))
    phone: Mapped[str | None] = mapped_column(String(40))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
