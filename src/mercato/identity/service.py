"""Authentication use cases: register, sign in, refresh, sign out, sessions, emailed tokens, password and email
changes, and resolving a request's credentials to a :class:`~mercato.identity.principal.Principal`.

Functions take the request's session and never commit. Password hashing happens before the first statement of a
write transaction (or on a separate read session for sign-in), so the SQLite writer lock is never held while
argon2 runs. Revocations take effect at once: the cached session state is deleted right after commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.audit import service as audit_service
from mercato.db.engine import after_commit
from mercato.errors import NotFound, RateLimited, ValidationFailed
from mercato.identity import emails, passwords, repository, rules, tokens
from mercato.identity.errors import EmailTaken, InvalidCredentials, InvalidToken
from mercato.identity.models import API_KEY_ROLES, AuthSession, RefreshToken, Role, TokenPurpose, User, UserToken
from mercato.identity.principal import Principal
from mercato.identity.schemas import user_snapshot
from mercato.platform import clock
from mercato.platform.context import Services, services_of

RESET_TTL = timedelta(hours=1)
VERIFY_TTL = timedelta(days=3)
INVITE_TTL = timedelta(hours=72)


@dataclass(frozen=True)
class SignedIn:
    """The result of a sign-in: the user and a fresh token pair. ``expires_in`` is in seconds."""

    user: User
    session_id: uuid.UUID
    access_token: str
    refresh_token: str
    expires_in: int


class RefreshTokenReused(InvalidToken):
    """A rotated refresh token was presented again: the session is revoked (kept by committing) and 401 sent."""

    commit = True


# --- sign-up and sign-in --------------------------------------------------------------------------------------


async def register(
    session: AsyncSession,
    *,
    email: str,
    password_hash: str,
    first_name: str | None,
    last_name: str | None,
    ip: str | None,
    user_agent: str | None,
) -> SignedIn:
    """Create a customer account and sign it in; queues the verification email.

    ``password_hash`` is computed by the caller before the transaction starts. Raises:
        EmailTaken: the email (compared case-insensitively) is in use, found by the check or, when a concurrent
            registration inserted it after the check (PostgreSQL), by the unique constraint on ``users.email``.
    """
    email = email.strip().lower()
    if await repository.email_exists(session, email):
        raise EmailTaken(f"An account with email {email} already exists.")
    now = clock.now()
    user = User(
        id=clock.new_id(),
        email=email,
        password_hash=password_hash,
        first_name=first_name,
        last_name=last_name,
        role=Role.customer,
        email_verified=False,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent registration of the same email committed first
        raise EmailTaken(f"An account with email {email} already exists.") from exc
    emails.verification(session, email, _new_user_token(session, user, TokenPurpose.verify_email, VERIFY_TTL))
    return await start_session(session, user, method="register", ip=ip, user_agent=user_agent)


async def authenticate(session: AsyncSession, *, email: str, password: str, ip: str) -> User:
    """Check an email and password (on a read session); failed attempts count against the login limits.

    Each attempt is counted against the account's and the IP's limit *before* the (slow) password check, in one
    atomic check-and-count per limit, so parallel wrong passwords cannot all pass a check that none of them has
    counted yet (at most 5 per account in 15 minutes get as far as the hash). A right password takes its counts
    back: only failures use up the limits (API.md §1).

    Raises:
        RateLimited: too many failures for this email or this IP (API.md §1); nothing is counted.
        InvalidCredentials: wrong email or password (one message for both; equal time for both).
    """
    limiter = services_of(session).limiter
    email_key = email.strip().lower()
    await limiter.attempt("login-account", email_key)
    try:
        await limiter.attempt("login-ip", ip)
    except RateLimited:
        await limiter.forgive("login-account", email_key)  # this attempt was never made
        raise
    user = await repository.user_by_email(session, email_key)
    ok = await passwords.verify_password(user.password_hash if user else None, password)
    if user is None or not ok:
        raise InvalidCredentials("Invalid email or password.")
    await limiter.forgive("login-account", email_key)
    await limiter.forgive("login-ip", ip)
    return user


async def start_session(
    session: AsyncSession, user: User, *, method: str, ip: str | None, user_agent: str | None
) -> SignedIn:
    """Open an auth session for ``user`` and issue its first token pair."""
    settings = services_of(session).settings
    now = clock.now()
    auth = AuthSession(
        id=clock.new_id(),
        user_id=user.id,
        method=method,
        ip=ip,
        user_agent=(user_agent or "")[:300] or None,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(seconds=settings.refresh_token_ttl),
    )
    session.add(auth)
    refresh = _new_refresh_token(session, auth.id)
    await session.flush()
    return SignedIn(user, auth.id, _access_token(session, user.id, auth.id), refresh, settings.access_token_ttl)


async def refresh(session: AsyncSession, refresh_token: str) -> SignedIn:
    """Exchange a refresh token for a new pair (rotation).

    Raises:
        RefreshTokenReused: the token was already exchanged; its whole session is revoked.
        InvalidToken: unknown token, or its session is revoked or expired, or the user is gone.
    """
    now = clock.now()
    token_hash = tokens.digest(refresh_token)
    rotated = await repository.rotate_refresh_token(session, token_hash, now)
    if rotated is None:
        known = await repository.refresh_token_by_hash(session, token_hash)
        if known is not None:
            await repository.revoke_session(session, known.session_id, now, "refresh_token_reuse")
            _forget_session_after_commit(session, known.session_id)
            raise RefreshTokenReused("This refresh token was already used; the session has been revoked.")
        raise InvalidToken("Invalid refresh token.")
    auth = await repository.auth_session(session, rotated.session_id)
    if auth is None or auth.revoked_at is not None or auth.expires_at <= now:
        raise InvalidToken("The session has ended; sign in again.")
    user = await repository.user_by_id(session, auth.user_id)
    if user is None:
        raise InvalidToken("The account no longer exists.")
    auth.last_used_at = now
    new_refresh = _new_refresh_token(session, auth.id)
    await session.flush()
    settings = services_of(session).settings
    return SignedIn(user, auth.id, _access_token(session, user.id, auth.id), new_refresh, settings.access_token_ttl)


async def logout(session: AsyncSession, principal: Principal) -> None:
    """Revoke the caller's current session (its refresh token and access tokens stop working at once)."""
    if principal.session_id is not None:
        await repository.revoke_session(session, principal.session_id, clock.now(), "logout")
        _forget_session_after_commit(session, principal.session_id)


async def list_sessions(session: AsyncSession, principal: Principal) -> list[dict[str, Any]]:
    """The caller's live sessions, newest first, with ``current`` marking this one."""
    assert principal.user_id is not None
    rows = await repository.active_sessions(session, principal.user_id, clock.now())
    return [
        {
            **{
                c: getattr(row, c)
                for c in ("id", "method", "user_agent", "ip", "created_at", "last_used_at", "expires_at")
            },
            "current": row.id == principal.session_id,
        }
        for row in rows
    ]


async def revoke_own_session(session: AsyncSession, principal: Principal, session_id: uuid.UUID) -> None:
    """Revoke one of the caller's sessions.

    Raises:
        NotFound: no live session with that id belongs to the caller.
    """
    auth = await repository.auth_session(session, session_id)
    if auth is None or auth.user_id != principal.user_id or auth.revoked_at is not None:
        raise NotFound("No such session.")
    await repository.revoke_session(session, session_id, clock.now(), "revoked_by_user")
    _forget_session_after_commit(session, session_id)


# --- emailed tokens -------------------------------------------------------------------------------------------


async def verify_email(session: AsyncSession, token: str) -> User:
    """Consume a verification or email-change token and mark the (new) address verified.

    Raises:
        InvalidToken: unknown, used or expired token.
        EmailTaken: the new address was taken since the change was requested.
    """
    now = clock.now()
    digest = tokens.digest(token)
    used = await repository.use_user_token(session, digest, TokenPurpose.verify_email, now)
    if used is None:
        used = await repository.use_user_token(session, digest, TokenPurpose.change_email, now)
    if used is None:
        raise InvalidToken("This verification link is invalid or has expired.")
    user = await repository.user_by_id(session, used.user_id)
    if user is None:
        raise InvalidToken("The account no longer exists.")
    if used.purpose == TokenPurpose.change_email:
        new_email = str(used.data["new_email"])
        if await repository.email_exists(session, new_email):
            raise EmailTaken(f"An account with email {new_email} already exists.")
        audit_service.record(
            session,
            "user.email_changed",
            "user",
            user.id,
            {"email": [user.email, new_email]},
            actor_id=user.id,
        )
        user.email = new_email
        # a reset link sent to the old address must not take over the account any more
        await _expire_emailed_tokens(session, user.id, now)
    user.email_verified = True
    user.updated_at = now
    await session.flush()
    forget_user_after_commit(session, user.id)
    return user


async def forgot_password(session: AsyncSession, email: str) -> None:
    """Queue a reset email if an account has this email; does the same visible work either way."""
    user = await repository.user_by_email(session, email)
    if user is None:
        return
    await repository.expire_user_tokens(session, user.id, TokenPurpose.reset_password, clock.now())
    emails.password_reset(session, user.email, _new_user_token(session, user, TokenPurpose.reset_password, RESET_TTL))


async def reset_password(session: AsyncSession, token: str, password: str, password_hash: str) -> User:
    """Consume a reset (or invitation) token, set the new password (``password_hash``, the hash of ``password``)
    and revoke every session and every other emailed token.

    Raises:
        InvalidToken: unknown, used or expired token.
        ValidationFailed: ``password`` is the account's email address (field ``password``).
    """
    now = clock.now()
    used = await repository.use_user_token(session, tokens.digest(token), TokenPurpose.reset_password, now)
    user = await repository.user_by_id(session, used.user_id) if used else None
    if used is None or user is None:
        raise InvalidToken("This reset link is invalid or has expired.")
    _check_new_password(password, user.email, "password")
    await _expire_emailed_tokens(session, user.id, now)
    user.password_hash = password_hash
    user.email_verified = True  # the token arrived at this address
    user.updated_at = now
    await _revoke_all(session, user.id, "password_reset")
    emails.password_changed(session, user.email)
    forget_user_after_commit(session, user.id)
    return user


async def password_matches(session: AsyncSession, user_id: uuid.UUID, password: str) -> bool:
    """True when ``password`` is the user's current password (run on a read session). A wrong one counts against
    the account's login limit, as a failed login does, so a stolen session cannot guess the password through
    change-password or change-email faster than through login.

    Raises:
        RateLimited: too many failed attempts for this account (API.md §1); nothing is checked.
    """
    user = await repository.user_by_id(session, user_id)
    if user is None:
        return False
    limiter = services_of(session).limiter
    await limiter.attempt("login-account", user.email)
    if not await passwords.verify_password(user.password_hash, password):
        return False
    await limiter.forgive("login-account", user.email)
    return True


async def change_password(session: AsyncSession, principal: Principal, password: str, password_hash: str) -> User:
    """Set a new password (``password_hash``, the hash of ``password``; the current password already checked by
    the caller), revoke the caller's other sessions and every emailed reset or email-change link.

    Raises:
        ValidationFailed: ``password`` is the account's email address (field ``new_password``).
    """
    assert principal.user_id is not None
    user = await repository.user_by_id(session, principal.user_id)
    if user is None:
        raise InvalidToken("The account no longer exists.")
    _check_new_password(password, user.email, "new_password")
    await _expire_emailed_tokens(session, user.id, clock.now())
    user.password_hash = password_hash
    user.updated_at = clock.now()
    await _revoke_all(session, user.id, "password_changed", keep=principal.session_id)
    emails.password_changed(session, user.email)
    return user


def _check_new_password(password: str, email: str, field: str) -> None:
    """API.md "Auth": a password is never the account's email (the request schemas check the rest)."""
    problem = rules.password_problem(password, email)
    if problem:
        raise ValidationFailed(problem, field=field)


async def _expire_emailed_tokens(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> None:
    """Expire every outstanding reset and email-change link of the user (after a password or email change)."""
    for purpose in (TokenPurpose.reset_password, TokenPurpose.change_email):
        await repository.expire_user_tokens(session, user_id, purpose, now)


async def request_email_change(session: AsyncSession, principal: Principal, new_email: str) -> None:
    """Send a confirmation to ``new_email``; the change happens when it is confirmed.

    Raises:
        EmailTaken: the address is already in use.
    """
    assert principal.user_id is not None
    new_email = new_email.strip().lower()
    if await repository.email_exists(session, new_email):
        raise EmailTaken(f"An account with email {new_email} already exists.")
    user = await repository.user_by_id(session, principal.user_id)
    if user is None:
        raise InvalidToken("The account no longer exists.")
    await repository.expire_user_tokens(session, user.id, TokenPurpose.change_email, clock.now())
    token = _new_user_token(session, user, TokenPurpose.change_email, VERIFY_TTL, data={"new_email": new_email})
    emails.email_change(session, new_email, token)


def new_invitation_token(session: AsyncSession, user: User) -> str:
    """A set-password token for an invited staff member (used with ``POST /auth/reset-password``)."""
    return _new_user_token(session, user, TokenPurpose.reset_password, INVITE_TTL)


# --- resolving credentials ------------------------------------------------------------------------------------


async def principal_from_access_token(services: Services, token: str, *, via_cookie: bool) -> Principal | None:
    """Verify an access token and check its session and user against the cached state.

    Returns ``None`` for an invalid or expired token, a revoked or expired session, or a deleted user. A cache
    hit costs no database round trip; entries live at most ``MERCATO_SESSION_CACHE_TTL`` (≤ 5 s) in process.
    """
    claims = tokens.decode_access_token(services.settings.secret, token)
    if claims is None:
        return None
    state = await _session_state(services, claims.session_id)
    if state is None or state["user_id"] != str(claims.user_id):
        return None
    user = await user_state(services, claims.user_id)
    if user is None or user["deleted"]:
        return None
    return Principal(
        role=Role(user["role"]),
        user_id=claims.user_id,
        session_id=claims.session_id,
        user=user,
        via_cookie=via_cookie,
    )


async def principal_from_api_key(services: Services, key: str) -> Principal | None:
    """Resolve an ``X-API-Key`` to a principal acting with the key's role, or ``None`` (unknown, revoked, or a
    ``customer``/``vendor`` key made before such keys were refused: see ``API_KEY_ROLES``)."""
    digest = tokens.digest(key)

    async def load() -> dict[str, Any]:
        async with services.db.session(write=False) as session:
            row = await repository.api_key_by_hash(session, digest)
        return {"id": str(row.id), "role": row.role} if row else {"id": None}

    ttl = services.settings.session_cache_ttl
    state = await services.cache.get_or_load(f"apikey:{digest}", load, ttl=300, local_ttl=ttl, name="api_key")
    if state["id"] is None or state["role"] not in API_KEY_ROLES:
        return None
    return Principal(role=Role(state["role"]), api_key_id=uuid.UUID(state["id"]))


async def _session_state(services: Services, session_id: uuid.UUID) -> dict[str, Any] | None:
    async def load() -> dict[str, Any]:
        async with services.db.session(write=False) as session:
            auth = await repository.auth_session(session, session_id)
        live = auth is not None and auth.revoked_at is None and auth.expires_at > clock.now()
        return {"user_id": str(auth.user_id) if auth else None, "live": live}

    ttl = services.settings.session_cache_ttl
    state = await services.cache.get_or_load(f"sess:{session_id}", load, ttl=300, local_ttl=ttl, name="session")
    return state if state["live"] else None


async def user_state(services: Services, user_id: uuid.UUID) -> dict[str, Any] | None:
    """The cached snapshot of a user (``UserRead`` fields plus ``deleted``), or ``None`` if there is no such user."""

    async def load() -> dict[str, Any]:
        async with services.db.session(write=False) as session:
            user = await repository.user_by_id(session, user_id, include_deleted=True)
        return user_snapshot(user) if user else {"deleted": True}

    ttl = services.settings.session_cache_ttl
    state = await services.cache.get_or_load(f"user:{user_id}", load, ttl=300, local_ttl=ttl, name="user")
    return cast(dict[str, Any], state)


def forget_user_after_commit(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Drop the cached snapshot of ``user_id`` once the transaction commits (profile, role, deletion)."""
    cache = services_of(session).cache

    async def forget() -> None:
        await cache.delete(f"user:{user_id}")

    after_commit(session, forget)


async def revoke_all_sessions(session: AsyncSession, user_id: uuid.UUID, reason: str) -> None:
    """Revoke every session of ``user_id`` (role change, deletion); effective once the transaction commits."""
    await _revoke_all(session, user_id, reason)


# --- helpers --------------------------------------------------------------------------------------------------


async def _revoke_all(session: AsyncSession, user_id: uuid.UUID, reason: str, *, keep: uuid.UUID | None = None) -> None:
    for session_id in await repository.revoke_sessions(session, user_id, clock.now(), reason, keep=keep):
        _forget_session_after_commit(session, session_id)


def _forget_session_after_commit(session: AsyncSession, session_id: uuid.UUID) -> None:
    cache = services_of(session).cache

    async def forget() -> None:
        await cache.delete(f"sess:{session_id}")

    after_commit(session, forget)


def _access_token(session: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID) -> str:
    settings = services_of(session).settings
    return tokens.issue_access_token(
        settings.secret,
        user_id=user_id,
        session_id=session_id,
        now=clock.now(),
        ttl=settings.access_token_ttl,
    )


def _new_refresh_token(session: AsyncSession, session_id: uuid.UUID) -> str:
    token = tokens.new_opaque_token()
    session.add(
        RefreshToken(id=clock.new_id(), session_id=session_id, token_hash=tokens.digest(token), created_at=clock.now())
    )
    return token


def _new_user_token(
    session: AsyncSession,
    user: User,
    purpose: TokenPurpose,
    ttl: timedelta,
    *,
    data: dict[str, Any] | None = None,
) -> str:
    token = tokens.new_opaque_token()
    now = clock.now()
    session.add(
        UserToken(
            id=clock.new_id(),
            user_id=user.id,
            purpose=purpose,
            token_hash=tokens.digest(token),
            data=data or {},
            created_at=now,
            expires_at=now + ttl,
        )
    )
    return token
