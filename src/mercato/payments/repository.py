"""Every query of the payments domain."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.db.queries import Paged, paged
from mercato.payments.models import CAPTURED, Payment, PaymentMethod, PaymentState, Refund, RefundState, WebhookEvent


async def payment(session: AsyncSession, payment_id: uuid.UUID, *, lock: bool = False) -> Payment | None:
    """The payment ``payment_id``; ``lock`` takes its row lock (``FOR UPDATE`` on PostgreSQL)."""
    query = select(Payment).where(Payment.id == payment_id)
    if lock:  # and refresh what an earlier read of this session put in the identity map
        query = query.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


async def payment_for_request(session: AsyncSession, request_key: str) -> Payment | None:
    """The attempt an earlier request with the same idempotency reference recorded."""
    return (await session.execute(select(Payment).where(Payment.request_key == request_key))).scalar_one_or_none()


async def refund_for_request(session: AsyncSession, request_key: str) -> Refund | None:
    """The refund an earlier request with the same idempotency reference recorded."""
    return (await session.execute(select(Refund).where(Refund.request_key == request_key))).scalar_one_or_none()


async def pending_payment(session: AsyncSession, order_id: uuid.UUID) -> Payment | None:
    """The order's attempt still waiting for the gateway, if any."""
    query = select(Payment).where(Payment.order_id == order_id, Payment.status == PaymentState.pending).limit(1)
    return (await session.execute(query)).scalar_one_or_none()


async def captured_payment(session: AsyncSession, order_id: uuid.UUID) -> Payment | None:
    """The payment that paid the order (``applied``) while its money is (partly) still with the store."""
    query = (
        select(Payment)
        .where(Payment.order_id == order_id, Payment.status.in_(CAPTURED), Payment.applied.is_(True))
        .order_by(Payment.created_at)
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def pending_refund_total(session: AsyncSession, payment_id: uuid.UUID) -> Decimal:
    """Sum of the payment's refunds still waiting for the gateway."""
    amounts = await session.scalars(
        select(Refund.amount).where(Refund.payment_id == payment_id, Refund.status == RefundState.pending)
    )
    return sum(amounts, Decimal("0.00"))


async def failed_refunds(session: AsyncSession, order_id: uuid.UUID, reason: str) -> int:
    """How many refunds of the order given for ``reason`` the gateway refused."""
    found = await session.scalar(
        select(func.count())
        .select_from(Refund)
        .where(Refund.order_id == order_id, Refund.reason == reason, Refund.status == RefundState.failed)
    )
    return int(found or 0)


async def restocked(session: AsyncSession, order_id: uuid.UUID) -> bool:
    """True when a refund of the order (pending or completed) already returned its units to stock."""
    found = await session.scalar(
        select(Refund.id)
        .where(Refund.order_id == order_id, Refund.restock.is_(True), Refund.status != RefundState.failed)
        .limit(1)
    )
    return found is not None


async def refund(session: AsyncSession, refund_id: uuid.UUID, *, lock: bool = False) -> Refund | None:
    """The refund ``refund_id``; ``lock`` takes its row lock."""
    query = select(Refund).where(Refund.id == refund_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


async def list_payments(
    session: AsyncSession, *, user_id: uuid.UUID | None, order_id: uuid.UUID | None, page: int, limit: int
) -> Paged[Payment]:
    """Payments, newest first; ``user_id`` / ``order_id`` narrow them."""
    query = select(Payment)
    if user_id is not None:
        query = query.where(Payment.user_id == user_id)
    if order_id is not None:
        query = query.where(Payment.order_id == order_id)
    return await paged(session, query.order_by(Payment.created_at.desc(), Payment.id.desc()), page=page, limit=limit)


def _methods_of(user_id: uuid.UUID) -> Select[Any]:
    return (
        select(PaymentMethod)
        .where(PaymentMethod.user_id == user_id)
        .order_by(PaymentMethod.is_default.desc(), PaymentMethod.created_at.desc(), PaymentMethod.id)
    )


async def has_methods(session: AsyncSession, user_id: uuid.UUID) -> bool:
    """True when the user has saved at least one method."""
    return (await session.scalar(_methods_of(user_id).with_only_columns(PaymentMethod.id).limit(1))) is not None


async def paged_methods(session: AsyncSession, user_id: uuid.UUID, *, page: int, limit: int) -> Paged[PaymentMethod]:
    """A page of the user's saved methods, default first, then newest."""
    return await paged(session, _methods_of(user_id), page=page, limit=limit)


async def method(session: AsyncSession, user_id: uuid.UUID, method_id: uuid.UUID) -> PaymentMethod | None:
    """The user's saved method ``method_id`` (None for another user's)."""
    query = select(PaymentMethod).where(PaymentMethod.id == method_id, PaymentMethod.user_id == user_id)
    return (await session.execute(query)).scalar_one_or_none()


async def delete_methods(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Delete every saved method of the user."""
    await session.execute(delete(PaymentMethod).where(PaymentMethod.user_id == user_id))


async def clear_default(session: AsyncSession, user_id: uuid.UUID) -> None:
    """No saved method of the user is the default any more."""
    await session.execute(update(PaymentMethod).where(PaymentMethod.user_id == user_id).values(is_default=False))


async def forget_webhook(session: AsyncSession, event_row_id: uuid.UUID) -> None:
    """Delete a recorded webhook event (its handling failed; the redelivery must be processed)."""
    await session.execute(delete(WebhookEvent).where(WebhookEvent.id == event_row_id))
