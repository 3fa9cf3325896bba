"""Cart tables. A cart belongs to a user (``user_id``) or to a guest (``token_hash``: the SHA-256 of the
``mercato_cart`` cookie's random value, so a database leak reveals no usable cookie)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mercato.db.base import Base, TimestampMixin, uuid_pk
from mercato.platform import clock


class Cart(TimestampMixin, Base):
    """A shopping cart; ``coupon_code`` is the applied coupon (checked again at checkout), ``expires_at`` is
    pushed forward by every change (30 days)."""

    __tablename__ = "carts"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(index=True)

    items: Mapped[list[CartItem]] = relationship(
        lazy="raise", order_by="CartItem.created_at", cascade="all, delete-orphan"
    )


class CartItem(Base):
    """One line: a product (``variant_id`` null) or one of its variants, and a quantity (1 or more)."""

    __tablename__ = "cart_items"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    cart_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("carts.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    variant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("product_variants.id", ondelete="CASCADE"))
    quantity: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
