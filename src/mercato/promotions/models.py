"""Coupon tables: ``coupons`` and one ``coupon_redemptions`` row per order that used a coupon.

``used_count`` counts active redemptions; a ``CHECK`` keeps it within ``usage_limit`` and it only moves through
single conditional ``UPDATE``s (ARCHITECTURE.md), so limits hold under concurrency.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mercato.db.base import Base, TimestampMixin, uuid_pk
from mercato.platform import clock


class CouponType(StrEnum):
    """``percentage``: ``value`` percent off the subtotal; ``fixed``: ``value`` off, capped at the subtotal."""

    percentage = "percentage"
    fixed = "fixed"


class Coupon(TimestampMixin, Base):
    """A discount code. ``code`` is stored upper-case and matched case-insensitively; ``value`` is a percentage
    (0-100, two decimals) or an amount in the store currency; limits are null when unlimited."""

    __tablename__ = "coupons"
    __table_args__ = (
        CheckConstraint("used_count >= 0", name="used_count_not_negative"),
        CheckConstraint("usage_limit IS NULL OR used_count <= usage_limit", name="used_count_within_limit"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    code: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(10))
    value: Mapped[Decimal]
    description: Mapped[str | None] = mapped_column(String(300))
    min_purchase: Mapped[Decimal | None]
    starts_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    usage_limit: Mapped[int | None]
    per_user_limit: Mapped[int | None]
    used_count: Mapped[int] = mapped_column(default=0)
    is_public: Mapped[bool] = mapped_column(default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(index=True)


class CouponRedemption(Base):
    """The use of a coupon by one order; ``released_at`` is set when the order is cancelled (the use no longer
    counts). ``user_id`` is null for guests, who are counted by ``email``."""

    __tablename__ = "coupon_redemptions"
    __table_args__ = (UniqueConstraint("coupon_id", "order_id"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    coupon_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("coupons.id", ondelete="CASCADE"), index=True)
    order_id: Mapped[uuid.UUID] = mapped_column(index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    released_at: Mapped[datetime | None]
