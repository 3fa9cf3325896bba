"""Stored idempotency keys (IETF draft-ietf-httpapi-idempotency-key-header): one row per (scope, key).

``scope`` names the caller and the route (e.g. ``user:<id>:POST /api/v1/orders``), ``fingerprint`` is the
SHA-256 of the request body, ``response_*`` hold the first response once it is known (null while in flight); the
body is kept as the caller hands it over, which :mod:`mercato.web.idempotency` seals (encrypts) first.
Rows live 24 hours (``expires_at``). The HTTP behaviour is in :mod:`mercato.web.idempotency`.

The storage functions below are what that module (and any other caller) uses:

- :func:`claim_key` / :func:`claim_key_committed` claim a key (a row with ``locked_until`` = now + 60 s and no
  response) or return the stored response; the committed variant runs in its own short write transaction, so a
  concurrent duplicate sees the claim at once (ARCHITECTURE.md: money POSTs record the key first). An unfinished
  claim past its ``locked_until`` (the first request died) is taken over; an expired row is reused.
- :func:`finish` stores the response in the caller's transaction (with the request's changes);
  :func:`abandon` / :func:`abandon_committed` delete the claim so a retry runs again.
- :func:`purge_expired` deletes rows past ``expires_at``; every claim purges a batch first, so expired keys never
  block and are removed without a scheduled job.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, LargeBinary, String, UniqueConstraint, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from mercato.db.base import Base, uuid_pk
from mercato.errors import DomainError
from mercato.platform import clock

if TYPE_CHECKING:
    from mercato.db.engine import Database


class IdempotencyRecord(Base):
    """The first request made with an ``Idempotency-Key`` and, once finished, its response."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    scope: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    locked_until: Mapped[datetime | None]
    response_status: Mapped[int | None]
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    expires_at: Mapped[datetime] = mapped_column(index=True)


# --- errors -------------------------------------------------------------------------------------------------


class IdempotencyMismatch(DomainError):
    """The key was already used, within 24 hours, for a different request (another body, path or query)."""

    status = 422
    code = "idempotency-mismatch"
    title = "Idempotency key reused for a different request"


class IdempotencyConflict(DomainError):
    """A request with the same key is still being processed; ``retry_after`` is in whole seconds."""

    status = 409
    code = "idempotency-conflict"
    title = "A request with this idempotency key is in progress"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


# --- storage ------------------------------------------------------------------------------------------------

#: How long a finished key replays its response (API.md §1: 24 hours).
TTL = timedelta(hours=24)
#: How long a claim without a response blocks duplicates; after that the first request is presumed dead and the
#: next request with the key takes the claim over (and runs the handler again).
LOCK = timedelta(seconds=60)
#: Expired rows deleted by each claim (the cleanup runs at claim time, so the table stays small without a job).
PURGE_BATCH = 100


@dataclass(frozen=True)
class Claim:
    """The caller owns ``(scope, key)`` and must run the request, then :func:`finish` or :func:`abandon` it.

    ``token`` is the claim's ``locked_until`` (UTC): finish and abandon only touch the row while it still holds
    this value, so an attempt that was taken over (it ran longer than :data:`LOCK`) cannot overwrite the newer one.
    """

    record_id: uuid.UUID
    token: datetime


@dataclass(frozen=True)
class StoredResponse:
    """The first response made with the key. ``headers`` are lower-case names; ``body`` is as :func:`finish` stored it
    (sealed by :mod:`mercato.web.idempotency`, which opens it to replay it)."""

    status: int
    headers: dict[str, str]
    body: bytes


async def claim_key(
    session: AsyncSession, *, scope: str, key: str, fingerprint: str, now: datetime | None = None
) -> Claim | StoredResponse:
    """Claim ``(scope, key)`` inside ``session``'s transaction (the caller commits it).

    Deletes up to :data:`PURGE_BATCH` expired rows first. Then: no live row → a new claim; a finished row with
    the same fingerprint → its :class:`StoredResponse`; an expired row, or an unfinished one whose lock has passed
    (the first request died) → taken over, returned as a :class:`Claim`. Safe under concurrency on both databases
    (``INSERT ... ON CONFLICT DO NOTHING`` and conditional ``UPDATE``\\ s).

    Args:
        scope: caller and route, at most 200 characters (e.g. ``user:<id>:POST /api/v1/orders``).
        key: the client's ``Idempotency-Key``, 1-255 characters.
        fingerprint: 64 hex characters identifying the request (see :mod:`mercato.web.idempotency`).
        now: the current time (UTC); :func:`mercato.platform.clock.now` when omitted.

    Raises:
        IdempotencyMismatch: the key was used for a request with another fingerprint (422).
        IdempotencyConflict: the first request with the key is still running (409, ``retry_after`` seconds).
    """
    now = now or clock.now()
    await purge_expired(session, now=now, limit=PURGE_BATCH)
    for _ in range(3):
        token = now + LOCK
        values = {
            "id": clock.new_id(),
            "scope": scope,
            "key": key,
            "fingerprint": fingerprint,
            "locked_until": token,
            "created_at": now,
            "expires_at": now + TTL,
        }
        insert = sqlite_insert if _dialect(session) == "sqlite" else postgresql_insert
        inserted = await session.execute(
            insert(IdempotencyRecord)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["scope", "key"])
            .returning(IdempotencyRecord.id)
        )
        record_id = inserted.scalar_one_or_none()
        if record_id is not None:
            return Claim(record_id, token)
        row = (
            await session.execute(
                select(IdempotencyRecord)
                .where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
                .execution_options(populate_existing=True)
            )
        ).scalar_one_or_none()
        if row is None:  # deleted between our INSERT and SELECT (abandoned): try again
            continue
        if row.expires_at <= now:  # an old use of the key: forget it
            taken = await _take_over(session, row.id, token, now, fingerprint=fingerprint, expired=True)
        else:
            if row.fingerprint != fingerprint:
                raise IdempotencyMismatch(
                    "This Idempotency-Key was already used for a different request; use a new key."
                )
            if row.response_status is not None:
                return StoredResponse(row.response_status, dict(row.response_headers or {}), row.response_body or b"")
            if row.locked_until is not None and row.locked_until > now:
                wait = max(1, math.ceil((row.locked_until - now).total_seconds()))
                raise IdempotencyConflict(
                    "A request with this Idempotency-Key is still being processed; retry later.", retry_after=wait
                )
            taken = await _take_over(session, row.id, token, now, fingerprint=fingerprint, expired=False)
        if taken:
            return Claim(row.id, token)
    raise IdempotencyConflict("A request with this Idempotency-Key is being processed; retry later.")


async def claim_key_committed(
    db: Database, *, scope: str, key: str, fingerprint: str, now: datetime | None = None
) -> Claim | StoredResponse:
    """:func:`claim_key` in its own short write transaction, committed before returning (ARCHITECTURE.md: money
    POSTs record the key first), so a concurrent duplicate sees the claim at once and gets 409.

    Never call this while a session of the same request holds SQLite's write lock (a write session that has run a
    statement): the new transaction would wait for it until the busy timeout. Raises as :func:`claim_key`.
    """
    outcome: Claim | StoredResponse | DomainError
    async with db.session(write=True) as session:
        try:
            outcome = await claim_key(session, scope=scope, key=key, fingerprint=fingerprint, now=now)
        except (IdempotencyMismatch, IdempotencyConflict) as exc:
            outcome = exc  # keep the purge; raise after the commit
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


async def finish(session: AsyncSession, claim: Claim, *, status: int, headers: dict[str, str], body: bytes) -> None:
    """Store the response of the claimed request in ``session``'s transaction (the same one as the request's
    changes, so both commit or neither), and release the lock. ``status`` is the HTTP status, ``headers`` the
    headers to replay (lower-case names), ``body`` the response body as the caller keeps it (sealed by
    :mod:`mercato.web.idempotency`).

    Raises:
        IdempotencyConflict: the claim was taken over by a newer attempt (this one ran longer than :data:`LOCK`);
            the caller's transaction must roll back so that only one attempt takes effect.
    """
    result = await session.execute(
        update(IdempotencyRecord)
        .where(
            IdempotencyRecord.id == claim.record_id,
            IdempotencyRecord.locked_until == claim.token,
            IdempotencyRecord.response_status.is_(None),
        )
        .values(response_status=status, response_headers=headers, response_body=body, locked_until=None)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        raise IdempotencyConflict(
            "This request took too long and a retry with the same Idempotency-Key took over; its changes were "
            "discarded.",
            retry_after=1,
        )


async def abandon(session: AsyncSession, claim: Claim) -> None:
    """Delete the claim in ``session``'s transaction, so that a retry with the same key runs the request again
    (used when the request failed and changed nothing). A claim already taken over is left alone."""
    await session.execute(
        delete(IdempotencyRecord)
        .where(IdempotencyRecord.id == claim.record_id, IdempotencyRecord.locked_until == claim.token)
        .execution_options(synchronize_session=False)
    )


async def abandon_committed(db: Database, claim: Claim) -> None:
    """:func:`abandon` in its own short write transaction (after the request's transaction has rolled back)."""
    async with db.session(write=True) as session:
        await abandon(session, claim)


async def purge_expired(session: AsyncSession, *, now: datetime | None = None, limit: int | None = None) -> int:
    """Delete keys whose 24 hours are over (``expires_at <= now``, UTC), at most ``limit`` of them (all when
    ``None``); returns how many were deleted. On PostgreSQL rows locked by a concurrent purge are skipped."""
    now = now or clock.now()
    expired = select(IdempotencyRecord.id).where(IdempotencyRecord.expires_at <= now)
    if limit is not None:
        expired = expired.order_by(IdempotencyRecord.expires_at).limit(limit)
        if _dialect(session) != "sqlite":
            expired = expired.with_for_update(skip_locked=True)
    result = await session.execute(
        delete(IdempotencyRecord)
        .where(IdempotencyRecord.id.in_(expired.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


async def _take_over(
    session: AsyncSession, record_id: uuid.UUID, token: datetime, now: datetime, *, fingerprint: str, expired: bool
) -> bool:
    """Conditionally re-claim an expired row (as new) or a stale unfinished one; False when someone else won."""
    query = update(IdempotencyRecord).where(IdempotencyRecord.id == record_id)
    if expired:
        query = query.where(IdempotencyRecord.expires_at <= now).values(
            fingerprint=fingerprint,
            locked_until=token,
            response_status=None,
            response_headers=None,
            response_body=None,
            created_at=now,
            expires_at=now + TTL,
        )
    else:
        query = query.where(
            IdempotencyRecord.response_status.is_(None),
            or_(IdempotencyRecord.locked_until.is_(None), IdempotencyRecord.locked_until <= now),
        ).values(locked_until=token)
    result = await session.execute(query.execution_options(synchronize_session=False))
    return _rowcount(result) == 1


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
