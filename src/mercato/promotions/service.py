"""Coupon use cases (API.md "Coupons" and the Pricing paragraph under "Cart").

For other domains: :func:`check` (is this code usable for this subtotal and customer now?), :func:`discount_of`
(the terms for :func:`mercato.cart.rules.price`), :func:`redeem` (count a use when an order is placed, safe under
concurrency) and :func:`release` (give the use back when the order is cancelled). The admin endpoints use the
rest. Functions take the caller's session, flush but never commit; amounts are ``Decimal`` in the store currency;
times are aware UTC.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.cart import rules as pricing
from mercato.db.queries import Paged
from mercato.errors import ValidationFailed
from mercato.identity import users_service
from mercato.platform import clock
from mercato.promotions import repository
from mercato.promotions.errors import CouponInvalid, CouponNotFound, DuplicateCode, Reason
from mercato.promotions.models import Coupon, CouponRedemption, CouponType
from mercato.promotions.repository import CouponFilter
from mercato.promotions.schemas import CouponBulkCreate, CouponCreate, CouponUpdate

#: Generated code characters: upper-case letters and digits without the look-alikes 0/O, 1/I/L.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
HUNDRED = Decimal(100)
_GENERATION_ROUNDS = 10


# --- for the cart and orders domains ----------------------------------------------------------------------------


def _unusable(coupon: Coupon | None, subtotal: Decimal, now: datetime) -> Reason | None:
    """The first reason (other than the per-customer limit) why ``coupon`` cannot be used, or None."""
    if coupon is None or coupon.deleted_at is not None:
        return "not_found"
    if coupon.starts_at is not None and now < coupon.starts_at:
        return "not_started"
    if coupon.expires_at is not None and now >= coupon.expires_at:
        return "expired"
    if coupon.usage_limit is not None and coupon.used_count >= coupon.usage_limit:
        return "exhausted"
    if coupon.min_purchase is not None and subtotal < coupon.min_purchase:
        return "below_minimum"
    return None


async def check(
    session: AsyncSession,
    code: str,
    *,
    subtotal: Decimal,
    user_id: uuid.UUID | None,
    email: str | None,
    now: datetime,
) -> Coupon:
    """The coupon with ``code`` (case-insensitive) if it can be used now on ``subtotal`` by this customer.

    Args:
        code: the code as the customer typed it.
        subtotal: the cart/order subtotal before discount (``Decimal``, two decimals).
        user_id: the signed-in customer, or None for a guest.
        email: the customer's email: a use under it counts for ``per_user_limit`` too (a guest's use counts
            against the same person signed in). None with ``user_id`` set means the account's email; with
            neither, the per-customer limit cannot be counted and is not applied.
        now: aware UTC time of the check (``starts_at`` inclusive, ``expires_at`` exclusive).

    Returns:
        The :class:`Coupon` (not deleted, started, not expired, below its usage limit, customer below the
        per-user limit, subtotal at least ``min_purchase``).

    Raises:
        CouponInvalid: with ``reason`` ``not_found`` (unknown or deleted), ``not_started``, ``expired``,
            ``exhausted``, ``per_user_exhausted`` or ``below_minimum``.
    """
    coupon = await repository.by_code(session, code)
    reason = _unusable(coupon, subtotal, now)
    if reason is not None:
        raise CouponInvalid(reason)
    assert coupon is not None
    if await _customer_used_up(session, coupon, user_id=user_id, email=email):
        raise CouponInvalid("per_user_exhausted")
    return coupon


async def _customer_used_up(
    session: AsyncSession, coupon: Coupon, *, user_id: uuid.UUID | None, email: str | None
) -> bool:
    if coupon.per_user_limit is None:
        return False
    if email is None and user_id is not None:
        user = await users_service.find_user(session, user_id)
        email = user.email if user is not None else None
    used = await repository.active_redemptions(session, coupon.id, user_id=user_id, email=email)
    return used >= coupon.per_user_limit


def discount_of(coupon: Coupon) -> pricing.Discount:
    """The coupon's terms for :func:`mercato.cart.rules.price`: ``percentage`` (``value`` percent of the
    subtotal) or ``fixed`` (``value`` in the store currency, capped at the subtotal by the pricing function)."""
    kind = CouponType(coupon.type)
    return pricing.Discount("percentage" if kind is CouponType.percentage else "fixed", coupon.value)


async def redeem(
    session: AsyncSession,
    code: str,
    *,
    order_id: uuid.UUID,
    user_id: uuid.UUID | None,
    email: str | None,
    subtotal: Decimal,
    now: datetime,
) -> Coupon:
    """Count one use of the coupon by the order being placed, in the caller's (write) transaction.

    Safe under concurrency: after :func:`check`, one conditional ``UPDATE`` adds the use only while
    ``used_count < usage_limit`` (and the coupon is not deleted); that ``UPDATE`` holds the coupon's row lock until
    the transaction ends, so the per-customer count that follows sees every committed redemption (PostgreSQL,
    READ COMMITTED; SQLite has one writer at a time). Then a :class:`CouponRedemption` row is written. If this
    raises, the caller's transaction must be rolled back (the request dependency does so).

    Args:
        code: case-insensitive. order_id: the new order's id. user_id / email: the customer (see :func:`check`).
        subtotal: the order subtotal before discount. now: aware UTC.

    Returns:
        The coupon, with ``used_count`` already incremented.

    Raises:
        CouponInvalid: any reason of :func:`check`; ``exhausted`` when the last use was taken concurrently;
            ``per_user_exhausted`` when this customer's concurrent order took their last use.
    """
    coupon = await check(session, code, subtotal=subtotal, user_id=user_id, email=email, now=now)
    if not await repository.count_use(session, coupon):
        raise CouponInvalid("exhausted")
    if await _customer_used_up(session, coupon, user_id=user_id, email=email):
        raise CouponInvalid("per_user_exhausted")
    repository.add_redemption(
        session,
        CouponRedemption(
            id=clock.new_id(),
            coupon_id=coupon.id,
            order_id=order_id,
            user_id=user_id,
            email=email.strip().lower() if email else None,
            created_at=now,
        ),
    )
    await session.flush()
    return coupon


async def release(session: AsyncSession, *, order_id: uuid.UUID, now: datetime) -> None:
    """Give back the coupon use of a cancelled order: ``released_at = now`` on its unreleased redemption and
    ``used_count - 1`` (never below 0), both conditional ``UPDATE``s. Does nothing when the order has no
    unreleased redemption, so calling it twice (or concurrently) gives back one use at most."""
    for coupon_id in await repository.release_redemptions(session, order_id, now):
        await repository.give_back_use(session, coupon_id)


# --- admin and public endpoints --------------------------------------------------------------------------------


async def list_public(session: AsyncSession, *, now: datetime, page: int, limit: int) -> Paged[Coupon]:
    """Public coupons usable at ``now`` (started, not expired, not used up, not deleted), newest first."""
    return await repository.public_page(session, now=now, page=page, limit=limit)


async def list_all(
    session: AsyncSession, filters: CouponFilter, *, now: datetime, page: int, limit: int
) -> Paged[Coupon]:
    """Every coupon matching ``filters`` (admins), newest first."""
    return await repository.admin_page(session, filters, now=now, page=page, limit=limit)


async def get_coupon(session: AsyncSession, code: str) -> Coupon:
    """The coupon with ``code`` (case-insensitive). Raises :class:`CouponNotFound` if none or deleted."""
    coupon = await repository.by_code(session, code)
    if coupon is None:
        raise CouponNotFound(f"No coupon has the code {code.strip().upper()!r}.")
    return coupon


def _check_terms(
    kind: CouponType, value: Decimal, starts_at: datetime | None, expires_at: datetime | None, *, value_field: str
) -> None:
    """API.md "Coupons": a percentage is at most 100; ``expires_at`` is after ``starts_at``."""
    if kind is CouponType.percentage and value > HUNDRED:
        raise ValidationFailed("A percentage coupon takes at most 100 (percent) off.", field=value_field)
    if starts_at is not None and expires_at is not None and expires_at <= starts_at:
        raise ValidationFailed("expires_at must be after starts_at.", field="expires_at")


async def create_coupon(session: AsyncSession, body: CouponCreate) -> Coupon:
    """Create a coupon; the code is stored upper-case.

    Raises:
        ValidationFailed: a percentage above 100 (``value``) or ``expires_at`` not after ``starts_at``.
        DuplicateCode: another coupon (deleted ones included) has the code.
    """
    _check_terms(body.type, body.value, body.starts_at, body.expires_at, value_field="value")
    code = body.code.upper()
    if await repository.taken_codes(session, [code]):
        raise DuplicateCode(f"The code {code!r} is already used by another coupon.")
    coupon = _new(body, code)
    repository.add(session, coupon)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent request created the same code first
        raise DuplicateCode(f"The code {code!r} is already used by another coupon.") from exc
    return coupon


def _new(terms: CouponCreate | CouponBulkCreate, code: str) -> Coupon:
    return Coupon(
        id=clock.new_id(),
        code=code,
        type=terms.type.value,
        value=terms.value,
        description=terms.description,
        min_purchase=terms.min_purchase,
        starts_at=terms.starts_at,
        expires_at=terms.expires_at,
        usage_limit=terms.usage_limit,
        per_user_limit=terms.per_user_limit,
        used_count=0,
        is_public=terms.is_public,
    )


def _generated_code(prefix: str) -> str:
    groups = ("".join(secrets.choice(CODE_ALPHABET) for _ in range(4)) for _ in range(2))
    return "-".join([prefix.upper(), *groups])


async def create_bulk(session: AsyncSession, body: CouponBulkCreate) -> list[str]:
    """Create ``body.count`` coupons with the same terms and unique generated codes ``PREFIX-XXXX-XXXX``
    (:data:`CODE_ALPHABET`, from :mod:`secrets`); codes that collide with existing ones or with each other are
    drawn again. All or nothing.

    Returns:
        The new codes, in creation order.

    Raises:
        ValidationFailed: as :func:`create_coupon`.
        DuplicateCode: unique codes could not be drawn (the prefix's code space is nearly full) or a concurrent
            request took one of them.
    """
    _check_terms(body.type, body.value, body.starts_at, body.expires_at, value_field="value")
    codes: list[str] = []
    for _ in range(_GENERATION_ROUNDS):
        fresh = {_generated_code(body.prefix) for _ in range(body.count - len(codes))} - set(codes)
        fresh -= await repository.taken_codes(session, fresh)
        codes.extend(sorted(fresh))
        if len(codes) == body.count:
            break
    else:
        raise DuplicateCode(f"Could not draw {body.count} unused codes with the prefix {body.prefix.upper()!r}.")
    repository.add(session, *(_new(body, code) for code in codes))
    try:
        await session.flush()
    except IntegrityError as exc:
        raise DuplicateCode("A generated code was taken concurrently; nothing was created, try again.") from exc
    return codes


async def update_coupon(session: AsyncSession, code: str, body: CouponUpdate) -> Coupon:
    """Apply a partial update (fields not sent keep their value; nullable ones may be cleared).

    Raises:
        CouponNotFound: no live coupon has the code.
        ValidationFailed: ``type``/``value``/``is_public`` set to null, a percentage above 100, ``expires_at`` not
            after ``starts_at``, or ``usage_limit`` below the uses already counted.
    """
    coupon = await get_coupon(session, code)
    changes = body.model_dump(exclude_unset=True)
    for field in ("type", "value", "is_public"):
        if field in changes and changes[field] is None:
            raise ValidationFailed(f"{field} cannot be null.", field=field)
    kind = CouponType(changes.get("type", coupon.type))
    value = changes.get("value", coupon.value)
    starts_at = changes.get("starts_at", coupon.starts_at)
    expires_at = changes.get("expires_at", coupon.expires_at)
    _check_terms(kind, value, starts_at, expires_at, value_field="value")
    usage_limit = changes.get("usage_limit", coupon.usage_limit)
    if usage_limit is not None and usage_limit < coupon.used_count:
        raise ValidationFailed(
            f"usage_limit cannot be below the {coupon.used_count} uses already counted.", field="usage_limit"
        )
    for field, new in changes.items():
        setattr(coupon, field, new.value if isinstance(new, CouponType) else new)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent redemption passed the new usage_limit
        raise ValidationFailed("usage_limit is below the uses already counted.", field="usage_limit") from exc
    return coupon


async def delete_coupon(session: AsyncSession, code: str, *, now: datetime) -> None:
    """Soft-delete the coupon: it can no longer be read, listed (except by admins asking for deleted ones) or
    redeemed; redemptions already counted stay. Raises :class:`CouponNotFound`."""
    coupon = await get_coupon(session, code)
    coupon.deleted_at = now
    await session.flush()


@dataclass(frozen=True)
class Validation:
    """The answer of :func:`validate`: ``discount`` is ``Decimal("0.00")`` when not ``valid``."""

    valid: bool
    code: str
    subtotal: Decimal
    discount: Decimal
    reason: Reason | None
    detail: str | None


async def validate(
    session: AsyncSession, code: str, *, subtotal: Decimal, user_id: uuid.UUID | None, now: datetime
) -> Validation:
    """Try the coupon on ``subtotal`` for the caller (``user_id`` None for a guest, whose per-customer limit
    cannot be counted before checkout) without counting a use; never raises for an unusable coupon.

    Returns:
        :class:`Validation` with the discount the pricing function would take off, or the reason it is refused.
    """
    normalised = code.strip().upper()
    try:
        coupon = await check(session, code, subtotal=subtotal, user_id=user_id, email=None, now=now)
    except CouponInvalid as exc:
        return Validation(False, normalised, subtotal, pricing.ZERO, exc.reason, exc.detail)
    totals = pricing.price([pricing.Line(normalised, subtotal, 1)], discount=discount_of(coupon))
    return Validation(True, coupon.code, subtotal, totals.discount_total, None, None)
