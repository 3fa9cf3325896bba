"""Every promotions query: coupons by code, listings, the conditional ``UPDATE``s that count and give back uses,
and redemption rows (ARCHITECTURE.md: counters move only through single conditional ``UPDATE``s)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from mercato.db.queries import Paged, paged
from mercato.promotions.models import Coupon, CouponRedemption

Status = Literal["active", "scheduled", "expired", "exhausted", "deleted"]


@dataclass(frozen=True)
class CouponFilter:
    """Filters of ``GET /coupons``. ``status`` (admins): ``active`` (usable now), ``scheduled`` (not started),
    ``expired``, ``exhausted`` (usage limit reached) or ``deleted``; None = every coupon that is not deleted.
    ``q`` matches part of the code (case-insensitive)."""

    status: Status | None = None
    is_public: bool | None = None
    q: str | None = None


async def by_code(session: AsyncSession, code: str, *, with_deleted: bool = False) -> Coupon | None:
    """The coupon with ``code`` (matched case-insensitively: codes are stored upper-case); deleted coupons only
    when ``with_deleted``. The row is re-read (``populate_existing``) so counters are current."""
    query = select(Coupon).where(Coupon.code == code.strip().upper())
    if not with_deleted:
        query = query.where(Coupon.deleted_at.is_(None))
    return (await session.execute(query.execution_options(populate_existing=True))).scalar_one_or_none()


async def taken_codes(session: AsyncSession, codes: Iterable[str]) -> set[str]:
    """Which of ``codes`` (upper-case) already belong to a coupon, deleted ones included."""
    wanted = list(codes)
    if not wanted:
        return set()
    return set((await session.execute(select(Coupon.code).where(Coupon.code.in_(wanted)))).scalars())


def _usable(now: datetime) -> ColumnElement[bool]:
    return and_(
        Coupon.deleted_at.is_(None),
        or_(Coupon.starts_at.is_(None), Coupon.starts_at <= now),
        or_(Coupon.expires_at.is_(None), Coupon.expires_at > now),
        or_(Coupon.usage_limit.is_(None), Coupon.used_count < Coupon.usage_limit),
    )


async def public_page(session: AsyncSession, *, now: datetime, page: int, limit: int) -> Paged[Coupon]:
    """Public coupons usable at ``now`` (started, not expired, not used up, not deleted), newest first."""
    query = (
        select(Coupon).where(Coupon.is_public.is_(True), _usable(now)).order_by(Coupon.created_at.desc(), Coupon.code)
    )
    return await paged(session, query, page=page, limit=limit)


async def admin_page(
    session: AsyncSession, filters: CouponFilter, *, now: datetime, page: int, limit: int
) -> Paged[Coupon]:
    """Every coupon matching ``filters`` (see :class:`CouponFilter`), newest first."""
    query = select(Coupon)
    if filters.status == "deleted":
        query = query.where(Coupon.deleted_at.is_not(None))
    else:
        query = query.where(Coupon.deleted_at.is_(None))
    if filters.status == "active":
        query = query.where(_usable(now))
    elif filters.status == "scheduled":
        query = query.where(Coupon.starts_at > now)
    elif filters.status == "expired":
        query = query.where(Coupon.expires_at <= now)
    elif filters.status == "exhausted":
        query = query.where(Coupon.usage_limit.is_not(None), Coupon.used_count >= Coupon.usage_limit)
    if filters.is_public is not None:
        query = query.where(Coupon.is_public.is_(filters.is_public))
    if filters.q:
        escaped = filters.q.upper().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Coupon.code.like(f"%{escaped}%", escape="\\"))
    return await paged(session, query.order_by(Coupon.created_at.desc(), Coupon.code), page=page, limit=limit)


async def count_use(session: AsyncSession, coupon: Coupon) -> bool:
    """``used_count += 1`` if the coupon is not deleted and below its ``usage_limit`` (one conditional
    ``UPDATE``, which also serialises concurrent redemptions of this coupon on PostgreSQL); False when no row
    matched. ``coupon.used_count`` is set to the new value."""
    query = (
        update(Coupon)
        .where(
            Coupon.id == coupon.id,
            Coupon.deleted_at.is_(None),
            or_(Coupon.usage_limit.is_(None), Coupon.used_count < Coupon.usage_limit),
        )
        .values(used_count=Coupon.used_count + 1)
        .returning(Coupon.used_count)
    )
    used = (await session.execute(query, execution_options={"synchronize_session": False})).scalar_one_or_none()
    if used is None:
        return False
    set_committed_value(coupon, "used_count", used)
    return True


async def give_back_use(session: AsyncSession, coupon_id: uuid.UUID) -> None:
    """``used_count -= 1`` if it is above 0 (one conditional ``UPDATE``; never below zero)."""
    query = update(Coupon).where(Coupon.id == coupon_id, Coupon.used_count > 0).values(used_count=Coupon.used_count - 1)
    await session.execute(query, execution_options={"synchronize_session": False})


async def active_redemptions(
    session: AsyncSession, coupon_id: uuid.UUID, *, user_id: uuid.UUID | None, email: str | None
) -> int:
    """How many unreleased redemptions of the coupon the customer holds: those of ``user_id`` and those made under
    ``email`` (case-insensitive), so that a use as a guest counts against the same person signed in; 0 when both
    are None."""
    conditions: list[ColumnElement[bool]] = []
    if user_id is not None:
        conditions.append(CouponRedemption.user_id == user_id)
    if email:
        conditions.append(func.lower(CouponRedemption.email) == email.strip().lower())
    if not conditions:
        return 0
    who = or_(*conditions)
    query = select(func.count()).where(
        CouponRedemption.coupon_id == coupon_id, CouponRedemption.released_at.is_(None), who
    )
    return int(await session.scalar(query) or 0)


def add_redemption(session: AsyncSession, redemption: CouponRedemption) -> None:
    """Stage a redemption row (written at the next flush)."""
    session.add(redemption)


async def release_redemptions(session: AsyncSession, order_id: uuid.UUID, now: datetime) -> list[uuid.UUID]:
    """Set ``released_at`` on the order's unreleased redemptions (one conditional ``UPDATE``, so two concurrent
    releases cannot both succeed) and return the ids of their coupons."""
    query = (
        update(CouponRedemption)
        .where(CouponRedemption.order_id == order_id, CouponRedemption.released_at.is_(None))
        .values(released_at=now)
        .returning(CouponRedemption.coupon_id)
    )
    return list((await session.execute(query, execution_options={"synchronize_session": False})).scalars())


def add(session: AsyncSession, *coupons: Coupon) -> None:
    """Stage new coupons (written at the next flush)."""
    session.add_all(coupons)
