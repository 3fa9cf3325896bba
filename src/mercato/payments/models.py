"""Payment tables (API.md "Payments"): ``payments`` (one row per attempt, completed or failed), ``refunds``, the
customers' saved ``payment_methods`` (the gateway's token encrypted at rest, never a card number) and
``payment_webhook_events`` (gateway callbacks already handled, so a replay changes nothing).

Amounts are ``Decimal`` in the store currency, stored as integer minor units (``db.base.Money``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mercato.db.base import Base, TimestampMixin, uuid_pk
from mercato.platform import clock


class PaymentState(StrEnum):
    """A payment attempt's state: ``pending`` while the gateway is asked (or a crash left it unknown, until
    reconciliation), then ``completed`` or ``failed``; refunds move a completed one on."""

    pending = "pending"
    completed = "completed"
    failed = "failed"
    partially_refunded = "partially_refunded"
    refunded = "refunded"


class RefundState(StrEnum):
    """``pending`` while the gateway is asked; ``completed`` or ``failed`` after."""

    pending = "pending"
    completed = "completed"
    failed = "failed"


#: Attempts whose captured money is (partly) still with the store.
CAPTURED = ("completed", "partially_refunded")


class Payment(TimestampMixin, Base):
    """One attempt to charge an order's total through a gateway.

    ``gateway_reference`` is the gateway's charge id (known once it answered); the attempt's own ``id`` is the
    idempotency key sent to the gateway, so reconciliation can ask the gateway what became of it.
    """

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("refunded_amount >= 0 AND refunded_amount <= amount", name="refunded_within_amount"),
        Index("ix_payments_user_id_created_at", "user_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="RESTRICT"), index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    amount: Mapped[Decimal]
    refunded_amount: Mapped[Decimal] = mapped_column(default=Decimal("0"))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20), default=PaymentState.pending)
    gateway: Mapped[str] = mapped_column(String(20))
    gateway_reference: Mapped[str | None] = mapped_column(String(100), index=True)
    method_brand: Mapped[str | None] = mapped_column(String(20))
    method_last4: Mapped[str | None] = mapped_column(String(4))
    payment_method_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("payment_methods.id", ondelete="SET NULL"))
    failure_reason: Mapped[str | None] = mapped_column(String(100))
    #: True for the attempt that paid the order (a surplus charge — one that landed after the order was paid
    #: another way, or cancelled — is refunded and never ``applied``).
    applied: Mapped[bool] = mapped_column(default=False)
    #: SHA-256 of the client's ``Idempotency-Key`` and its scope: a retry finds this attempt instead of charging anew.
    request_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: SHA-256 of the request that made the attempt (:attr:`mercato.web.idempotency.Idempotency.fingerprint`): a
    #: later request with the same key but another body (order, card) is refused (422), never given this attempt.
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))


class Refund(Base):
    """Money given back on a payment (API.md ``Refund``); ``restock`` records whether units went back on hand."""

    __tablename__ = "refunds"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="RESTRICT"), index=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payments.id", ondelete="RESTRICT"), index=True)
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(500))
    restock: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(12), default=RefundState.pending)
    gateway_reference: Mapped[str | None] = mapped_column(String(100))
    failure_reason: Mapped[str | None] = mapped_column(String(100))
    actor_id: Mapped[uuid.UUID | None]
    #: The API key the refund was asked for with (``actor_id`` is then None): its ``order.refunded`` event names
    #: it even when the gateway decides later and a job or webhook records it.
    api_key_id: Mapped[uuid.UUID | None]
    #: SHA-256 of the client's ``Idempotency-Key`` and its scope: a retry finishes this refund, never a second one.
    request_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: SHA-256 of the request that asked for the refund: the same key with another body (amount, order) is refused.
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class PaymentMethod(Base):
    """A customer's saved card: what the customer sees (brand, last4, expiry) and the gateway's reusable token,
    Fernet-encrypted (``token_encrypted``). No card number or CVC is ever stored."""

    __tablename__ = "payment_methods"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    gateway: Mapped[str] = mapped_column(String(20))
    brand: Mapped[str] = mapped_column(String(20))
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int]
    exp_year: Mapped[int]
    is_default: Mapped[bool] = mapped_column(default=False)
    token_encrypted: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class WebhookEvent(Base):
    """A gateway callback already handled (its id per gateway is unique): a replayed delivery changes nothing."""

    __tablename__ = "payment_webhook_events"
    __table_args__ = (UniqueConstraint("gateway", "event_id"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    gateway: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(60))
    received_at: Mapped[datetime] = mapped_column(default=clock.now)
