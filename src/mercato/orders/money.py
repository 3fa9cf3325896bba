"""How money moves an order (API.md "Orders"/"Payments"): paid, payment failed, refunded. The payments domain
calls these inside its own short transactions, holding the order's row lock; each appends its ``order_events``
row (``order.paid``, ``order.payment_failed``, ``order.refunded``) like every other change of an order."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.inventory import service as inventory
from mercato.orders import events, notices, repository
from mercato.orders.errors import InvalidTransition, OrderNotFound
from mercato.orders.models import Order, OrderStatus, PaymentStatus
from mercato.platform.email import queue_email

#: Payment states in which an order can take a payment (API.md: paying a paid order → 409).
PAYABLE = (PaymentStatus.unpaid, PaymentStatus.failed)
#: Payment states in which captured money is (partly) still with the store.
REFUNDABLE = (PaymentStatus.paid, PaymentStatus.partially_refunded)
#: Job a cancelled paid order enqueues; the payments domain's handler refunds what its payment still holds.
REFUND_CANCELLED_JOB = "payments.refund_cancelled_order"


async def locked_order(session: AsyncSession, order_id: uuid.UUID) -> Order:
    """The order with its row lock, for the system (no caller check: payments settle what they recorded).

    Raises:
        OrderNotFound: no such order.
    """
    order = await repository.order(session, order_id, lock=True)
    if order is None:
        raise OrderNotFound(f"No order {order_id}.")
    return order


def units_of(order: Order) -> list[tuple[uuid.UUID, uuid.UUID | None, int]]:
    """The order's ``(product_id, variant_id, quantity)`` units, as the inventory service takes them."""
    return [(item.product_id, item.variant_id, item.quantity) for item in order.items]


def check_payable(order: Order) -> None:
    """Raise :class:`InvalidTransition` (409) unless the order is waiting for its money: ``pending``, or
    ``processing`` after a staff confirmation (cash on delivery), and not paid yet."""
    if order.status not in (OrderStatus.pending, OrderStatus.processing) or order.payment_status not in PAYABLE:
        raise InvalidTransition(
            f"Order {order.number} is {order.status} and {order.payment_status}; it cannot take a payment."
        )


async def mark_paid(
    session: AsyncSession,
    order: Order,
    *,
    payment_id: uuid.UUID | None,
    amount: Decimal,
    actor_id: uuid.UUID | None,
) -> None:
    """The order's total was captured: ``payment_status`` → ``paid``; a pending order moves to ``processing``
    and its reserved stock is committed (on hand and reserved both drop); the reservation no longer expires.
    ``payment_id`` is None for an order with nothing to pay (total 0.00, e.g. a 100 % coupon).

    Raises:
        InvalidTransition: the order cannot take a payment (see :func:`check_payable`).
    """
    check_payable(order)
    if order.status == OrderStatus.pending:
        await inventory.commit(session, units_of(order), reference=order.number, reason="order.paid", actor_id=actor_id)
        order.status = OrderStatus.processing
    order.payment_status = PaymentStatus.paid
    order.reservation_expires_at = None
    data = {
        "payment_status": PaymentStatus.paid.value,
        "reservation_expires_at": None,
        "payment_id": str(payment_id) if payment_id is not None else None,
        "amount": f"{amount:.2f}",
    }
    await events.record(session, order, "order.paid", data, actor_id)
    notices.notify(session, order, "is paid", f"We have received {amount:.2f} {order.currency}. We are preparing it.")


async def mark_payment_failed(
    session: AsyncSession, order: Order, *, payment_id: uuid.UUID, reason: str | None, actor_id: uuid.UUID | None
) -> None:
    """A payment was declined: ``payment_status`` → ``failed`` (until a payment succeeds); the order stays
    ``pending`` and keeps its reservation until the TTL (the saga's compensation is the expiry job)."""
    order.payment_status = PaymentStatus.failed
    data = {"payment_status": PaymentStatus.failed.value, "payment_id": str(payment_id), "failure_reason": reason}
    await events.record(session, order, "order.payment_failed", data, actor_id)


async def mark_refunded(
    session: AsyncSession,
    order: Order,
    *,
    refund_id: uuid.UUID,
    amount: Decimal,
    fully: bool,
    restock: bool,
    actor_id: uuid.UUID | None,
    api_key_id: uuid.UUID | None,
) -> None:
    """``amount`` went back to the customer: ``payment_status`` → ``refunded`` when nothing captured is left
    (``fully``), else ``partially_refunded``. With ``restock`` every unit of the order returns to on hand
    (one inventory history row each, reason ``order.refunded``). The customer gets an email. ``actor_id`` and
    ``api_key_id`` name who asked for the refund (the event names them however later the gateway decided)."""
    if restock:
        await inventory.restock(
            session, units_of(order), reference=order.number, reason="order.refunded", actor_id=actor_id
        )
    order.payment_status = PaymentStatus.refunded if fully else PaymentStatus.partially_refunded
    data = {
        "payment_status": order.payment_status,
        "refund_id": str(refund_id),
        "amount": f"{amount:.2f}",
        "restock": restock,
    }
    await events.record(session, order, "order.refunded", data, actor_id, api_key_id=api_key_id)
    if order.customer_email:
        queue_email(
            session,
            to=order.customer_email,
            subject=f"Refund for your order {order.number}",
            text=(
                f"We have refunded {amount:.2f} {order.currency} for your order {order.number} to the card you "
                "paid with. Depending on your bank it shows on your statement within 5-10 business days.\n"
            ),
        )


async def positions(session: AsyncSession) -> list[tuple[uuid.UUID, str, Decimal, str]]:
    """``(id, number, total, payment_status)`` of every order, for the money check (``mercato check``)."""
    return await repository.money_positions(session)
