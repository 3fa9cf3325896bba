"""Every identity query. Services call these; nothing else builds identity SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.db.queries import Paged, paged
from mercato.identity.models import Address, ApiKey, AuthSession, OidcIdentity, RefreshToken, User, UserToken


async def user_by_id(session: AsyncSession, user_id: uuid.UUID, *, include_deleted: bool = False) -> User | None:
    """The user with ``user_id`` (deleted users only when asked)."""
    user = await session.get(User, user_id)
    if user is None or (user.deleted_at is not None and not include_deleted):
        return None
    return user


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    """The live user whose email equals ``email`` case-insensitively."""
    return (
        await session.execute(select(User).where(User.email == email.strip().lower(), User.deleted_at.is_(None)))
    ).scalar_one_or_none()


async def email_exists(session: AsyncSession, email: str) -> bool:
    """True if any row (deleted ones are anonymised, so they never match) uses ``email``."""
    found = await session.scalar(select(User.id).where(User.email == email.strip().lower()))
    return found is not None


async def list_users(session: AsyncSession, *, role: str | None, q: str | None, page: int, limit: int) -> Paged[User]:
    """Live users, newest first, filtered by role and by a substring of email or name."""
    query = select(User).where(User.deleted_at.is_(None))
    if role:
        query = query.where(User.role == role)
    if q:
        like = f"%{q.lower()}%"
        query = query.where(
            or_(
                User.email.like(like),
                func.lower(User.first_name).like(like),
                func.lower(User.last_name).like(like),
            )
        )
    return await paged(session, query.order_by(User.created_at.desc(), User.id.desc()), page=page, limit=limit)


async def auth_session(session: AsyncSession, session_id: uuid.UUID) -> AuthSession | None:
    """The auth session row, revoked or not."""
    return await session.get(AuthSession, session_id)


async def active_sessions(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> Sequence[AuthSession]:
    """The user's sessions that are neither revoked nor expired, newest first."""
    return (
        (
            await session.execute(
                select(AuthSession)
                .where(
                    AuthSession.user_id == user_id,
                    AuthSession.revoked_at.is_(None),
                    AuthSession.expires_at > now,
                )
                .order_by(AuthSession.created_at.desc())
            )
        )
        .scalars()
        .all()
    )


async def revoke_sessions(
    session: AsyncSession, user_id: uuid.UUID, now: datetime, reason: str, *, keep: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Revoke every live session of the user except ``keep``; returns the revoked ids."""
    query = select(AuthSession.id).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
    if keep is not None:
        query = query.where(AuthSession.id != keep)
    ids = list((await session.execute(query)).scalars().all())
    if ids:
        await session.execute(
            update(AuthSession).where(AuthSession.id.in_(ids)).values(revoked_at=now, revoke_reason=reason)
        )
    return ids


async def revoke_session(session: AsyncSession, session_id: uuid.UUID, now: datetime, reason: str) -> bool:
    """Revoke one session if still live; True when this call revoked it."""
    result = await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=now, revoke_reason=reason)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def rotate_refresh_token(session: AsyncSession, token_hash: str, now: datetime) -> RefreshToken | None:
    """Atomically mark the unrotated token ``token_hash`` as rotated. Returns it, or ``None`` when it is unknown
    or was already rotated (a concurrent second use loses here)."""
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == token_hash, RefreshToken.rotated_at.is_(None))
        .values(rotated_at=now)
        .returning(RefreshToken.id, RefreshToken.session_id)
    )
    row = result.first()
    if row is None:
        return None
    return RefreshToken(id=row.id, session_id=row.session_id, token_hash=token_hash, rotated_at=now)


async def refresh_token_by_hash(session: AsyncSession, token_hash: str) -> RefreshToken | None:
    """The refresh token stored under ``token_hash``, rotated or not."""
    return (
        await session.execute(select(RefreshToken).where(RefreshToken.token_hash == token_hash))
    ).scalar_one_or_none()


async def use_user_token(session: AsyncSession, token_hash: str, purpose: str, now: datetime) -> UserToken | None:
    """Atomically consume an unexpired, unused token of ``purpose``; ``None`` if there is none (single use)."""
    result = await session.execute(
        update(UserToken)
        .where(
            UserToken.token_hash == token_hash,
            UserToken.purpose == purpose,
            UserToken.used_at.is_(None),
            UserToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(UserToken.id)
    )
    token_id = result.scalar_one_or_none()
    if token_id is None:
        return None
    return await session.get(UserToken, token_id, populate_existing=True)


async def expire_user_tokens(session: AsyncSession, user_id: uuid.UUID, purpose: str, now: datetime) -> None:
    """Invalidate the user's outstanding tokens of ``purpose`` (a newer one replaces them)."""
    await session.execute(
        update(UserToken)
        .where(UserToken.user_id == user_id, UserToken.purpose == purpose, UserToken.used_at.is_(None))
        .values(used_at=now)
    )


async def api_key_by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    """The unrevoked API key stored under ``key_hash``."""
    return (
        await session.execute(select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))
    ).scalar_one_or_none()


async def list_api_keys(session: AsyncSession, *, page: int, limit: int) -> Paged[ApiKey]:
    """Unrevoked API keys, newest first."""
    query = select(ApiKey).where(ApiKey.revoked_at.is_(None)).order_by(ApiKey.created_at.desc())
    return await paged(session, query, page=page, limit=limit)


async def api_key(session: AsyncSession, key_id: uuid.UUID) -> ApiKey | None:
    """The unrevoked API key ``key_id``."""
    key = await session.get(ApiKey, key_id)
    return key if key is not None and key.revoked_at is None else None


async def oidc_identity(session: AsyncSession, provider: str, subject: str) -> OidcIdentity | None:
    """The link of ``provider``'s ``subject`` to a user."""
    return (
        await session.execute(
            select(OidcIdentity).where(OidcIdentity.provider == provider, OidcIdentity.subject == subject)
        )
    ).scalar_one_or_none()


async def addresses(session: AsyncSession, user_id: uuid.UUID, *, page: int, limit: int) -> Paged[Address]:
    """The user's addresses, default first, then oldest first."""
    query = (
        select(Address)
        .where(Address.user_id == user_id)
        .order_by(Address.is_default.desc(), Address.created_at, Address.id)
    )
    return await paged(session, query, page=page, limit=limit)


async def address(session: AsyncSession, user_id: uuid.UUID, address_id: uuid.UUID) -> Address | None:
    """The address ``address_id`` if it belongs to ``user_id``."""
    found = await session.get(Address, address_id)
    return found if found is not None and found.user_id == user_id else None


async def clear_default_address(session: AsyncSession, user_id: uuid.UUID, *, keep: uuid.UUID) -> None:
    """Unset ``is_default`` on the user's other addresses."""
    await session.execute(
        update(Address).where(Address.user_id == user_id, Address.id != keep).values(is_default=False)
    )


async def delete_personal_rows(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Remove the user's addresses and sign-in provider links (account deletion: both hold personal data)."""
    await session.execute(delete(Address).where(Address.user_id == user_id))
    await session.execute(delete(OidcIdentity).where(OidcIdentity.user_id == user_id))
