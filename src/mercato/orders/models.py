"""Order tables: ``orders`` (the current projection), ``order_items`` (price snapshots) and ``order_events``
(the append-only history every change writes in the same transaction; API.md "Orders").

``seq`` is the order's place in the store's sequence and gives the human number ``MC-000123``.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mercato.db.base import Base, TimestampMixin, uuid_pk
from mercato.platform import clock


class OrderStatus(StrEnum):
    """Fulfilment state; moves follow :data:`mercato.orders.rules.TRANSITIONS`."""

    pending = "pending"
    processing = "processing"
    shipped = "shipped"
    delivered = "delivered"
    cancelled = "cancelled"
    returned = "returned"


class PaymentStatus(StrEnum):
    """Money state of an order (API.md ``Order.payment_status``)."""

    unpaid = "unpaid"
    paid = "paid"
    partially_refunded = "partially_refunded"
    refunded = "refunded"
    failed = "failed"


class Channel(StrEnum):
    """Where the order was taken (source 002): the web shop or a staff member entering it."""

    web = "web"
    instagram = "instagram"
    facebook = "facebook"
    whatsapp = "whatsapp"
    call = "call"
    offline = "offline"


class Priority(StrEnum):
    """Handling priority of an order taken by staff (source 002)."""

    low = "low"
    normal = "normal"
    high = "high"
    urgent = "urgent"


class Order(TimestampMixin, Base):
    """An order: who, what (``items``), money (``Decimal`` totals from the pricing function), where, and state.

    ``token_hash`` is the SHA-256 of a guest order's ``order_token``; ``reservation_expires_at`` is when an
    unpaid, unconfirmed order is cancelled and its stock released (null once stock is committed).
    """

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("total >= 0", name="total_not_negative"),
        Index("ix_orders_user_id_created_at", "user_id", "created_at"),
        Index("ix_orders_status_expected_delivery_date", "status", "expected_delivery_date"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    seq: Mapped[int] = mapped_column(unique=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(12), default=OrderStatus.pending, index=True)
    payment_status: Mapped[str] = mapped_column(String(20), default=PaymentStatus.unpaid)
    channel: Mapped[str] = mapped_column(String(12), default=Channel.web, index=True)
    priority: Mapped[str] = mapped_column(String(8), default=Priority.normal)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[Decimal]
    discount_total: Mapped[Decimal]
    shipping_total: Mapped[Decimal]
    tax_total: Mapped[Decimal]
    total: Mapped[Decimal]
    coupon_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("coupons.id", ondelete="SET NULL"))
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    customer_name: Mapped[str | None] = mapped_column(String(200))
    customer_email: Mapped[str | None] = mapped_column(String(320), index=True)
    customer_phone: Mapped[str | None] = mapped_column(String(40))
    shipping_address: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    shipping_method: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    carrier: Mapped[str | None] = mapped_column(String(100))
    tracking_number: Mapped[str | None] = mapped_column(String(100))
    expected_delivery_date: Mapped[date | None]
    notes: Mapped[str | None] = mapped_column(Text)
    cancel_reason: Mapped[str | None] = mapped_column(String(50))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    reservation_expires_at: Mapped[datetime | None] = mapped_column(index=True)

    items: Mapped[list[OrderItem]] = relationship(
        lazy="raise", order_by="OrderItem.position", cascade="all, delete-orphan"
    )


class OrderItem(Base):
    """A line of an order with the price snapshot taken at placement; ``discount`` is this line's share of the
    order discount (API.md "Pricing": allocated in proportion, for refunds)."""

    __tablename__ = "order_items"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(default=0)
    product_id: Mapped[uuid.UUID] = mapped_column(index=True)
    variant_id: Mapped[uuid.UUID | None]
    name: Mapped[str] = mapped_column(String(300))
    sku: Mapped[str | None] = mapped_column(String(64))
    unit_price: Mapped[Decimal]
    quantity: Mapped[int]
    line_total: Mapped[Decimal]
    discount: Mapped[Decimal] = mapped_column(default=Decimal("0"))


class OrderEvent(Base):
    """One appended change of an order: ``type`` (``order.placed`` ...), ``status`` after it, ``data`` (the
    changed fields, for rebuilding the order ``as_of`` a time), who and when (microseconds, UTC). Who: the user
    (``actor_id``), or the API key it was made with (``api_key_id``; a key belongs to no user), or neither for
    the system (a job) — as in the audit log."""

    __tablename__ = "order_events"
    __table_args__ = (UniqueConstraint("order_id", "seq"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    seq: Mapped[int]
    type: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(12))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    actor_id: Mapped[uuid.UUID | None]
    api_key_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
