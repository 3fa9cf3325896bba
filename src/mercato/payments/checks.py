"""Money invariants for ``mercato check`` (issue: "money reconciles")."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.checks import register
from mercato.orders import money
from mercato.orders.models import PaymentStatus
from mercato.payments.models import Payment, PaymentState, Refund, RefundState

ZERO = Decimal("0.00")
CAPTURED = (PaymentState.completed, PaymentState.partially_refunded, PaymentState.refunded)


@register("payments.money_reconciles")
async def money_reconciles(session: AsyncSession) -> list[str]:
    """For every order, captured − refunded equals what the order says it holds: its total when ``paid``,
    between 0 and the total when ``partially_refunded``, 0 when ``refunded``, ``unpaid`` or ``failed``; and every
    payment's ``refunded_amount`` is the sum of its completed refunds."""
    captured: dict[object, Decimal] = defaultdict(lambda: ZERO)
    refunded_by_payment: dict[object, Decimal] = defaultdict(lambda: ZERO)
    problems: list[str] = []
    payments = (await session.execute(select(Payment).where(Payment.status.in_(CAPTURED)))).scalars().all()
    refunds = await session.execute(
        select(Refund.payment_id, Refund.amount).where(Refund.status == RefundState.completed)
    )
    for payment_id, amount in refunds:
        refunded_by_payment[payment_id] += amount
    refunded: dict[object, Decimal] = defaultdict(lambda: ZERO)
    for payment in payments:
        captured[payment.order_id] += payment.amount
        refunded[payment.order_id] += refunded_by_payment[payment.id]
        if payment.refunded_amount != refunded_by_payment[payment.id]:
            problems.append(
                f"payment {payment.id}: refunded_amount {payment.refunded_amount} but refunds add up to "
                f"{refunded_by_payment[payment.id]}"
            )
    for order_id, number, total, status in await money.positions(session):
        held = captured[order_id] - refunded[order_id]
        expected_ok = {
            PaymentStatus.paid: held == total,
            PaymentStatus.partially_refunded: ZERO < held < total,
            PaymentStatus.refunded: held == ZERO and captured[order_id] > ZERO,
            PaymentStatus.unpaid: held == ZERO,
            PaymentStatus.failed: held == ZERO,
        }.get(PaymentStatus(status), False)
        if not expected_ok:
            problems.append(
                f"order {number}: payment_status {status}, total {total}, captured {captured[order_id]}, "
                f"refunded {refunded[order_id]}"
            )
    return problems
