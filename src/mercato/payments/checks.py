"""Money invariants for ``mercato check`` (issue: "money reconciles"), and the job queue's: money that a failed
background job should have moved is only noticed there."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.checks import register
from mercato.orders import money
from mercato.orders.models import Order, OrderStatus, PaymentStatus
from mercato.payments.models import Payment, PaymentState, Refund, RefundState
from mercato.platform.jobs import Job

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


@register("payments.cancelled_orders_refunded")
async def cancelled_orders_refunded(session: AsyncSession) -> list[str]:
    """No cancelled order keeps its customer's money: a cancelled order is never left ``paid`` or
    ``partially_refunded`` once its refund is no longer in progress (no refund of it waiting for the gateway, no
    queued or running ``payments.refund_cancelled_order`` job). One that is left means the gateway refused the
    refund ``MERCATO_JOB_MAX_ATTEMPTS`` times — at once, until the job was dead (see ``jobs.none_dead``), or after
    taking it (a Stripe refund that failed later: each such refusal schedules the job again, until the attempts
    are used up, and no job is dead then): someone must give the money back.

    Returns one line per such order: its number, payment status, the amount still held and the gateway's reason
    for the last refused refund."""
    holding = (
        await session.execute(
            select(Order.id, Order.number, Order.payment_status).where(
                Order.status == OrderStatus.cancelled, Order.payment_status.in_(money.REFUNDABLE)
            )
        )
    ).all()
    if not holding:
        return []
    ids = [order_id for order_id, _, _ in holding]
    pending = set(
        await session.scalars(
            select(Refund.order_id).where(Refund.order_id.in_(ids), Refund.status == RefundState.pending)
        )
    )
    queued = await session.scalars(
        select(Job.payload).where(Job.name == money.REFUND_CANCELLED_JOB, Job.status.in_(("queued", "running")))
    )
    retrying = {str(payload.get("order_id")) for payload in queued}
    held: dict[object, Decimal] = defaultdict(lambda: ZERO)
    currency: dict[object, str] = {}
    payments = await session.execute(
        select(Payment.order_id, Payment.amount, Payment.refunded_amount, Payment.currency).where(
            Payment.order_id.in_(ids), Payment.status.in_(CAPTURED), Payment.applied.is_(True)
        )
    )
    for order_id, amount, refunded_amount, payment_currency in payments:
        held[order_id] += amount - refunded_amount
        currency[order_id] = payment_currency
    reasons: dict[object, str | None] = {}
    failed = await session.execute(
        select(Refund.order_id, Refund.failure_reason)
        .where(Refund.order_id.in_(ids), Refund.status == RefundState.failed)
        .order_by(Refund.created_at)
    )
    for order_id, reason in failed:
        reasons[order_id] = reason  # the latest wins
    return [
        f"order {number}: cancelled but payment_status {status}, still holding {held[order_id]:.2f} "
        f"{currency.get(order_id, '')}; last refund refused: {reasons.get(order_id) or 'none attempted'}"
        for order_id, number, status in sorted(holding, key=lambda row: row[1])
        if order_id not in pending and str(order_id) not in retrying
    ]


@register("jobs.none_dead")
async def none_dead(session: AsyncSession) -> list[str]:
    """No background job has run out of retries (``platform/jobs.py``: status ``dead`` after ``max_attempts``
    failures). A dead job is work that never happened — a refund, an email — and is never retried by itself.

    Returns one line per dead job, oldest first: its id, name, attempts and last error (payloads are left out:
    they may hold customer data)."""
    dead = await session.execute(
        select(Job.id, Job.name, Job.attempts, Job.last_error).where(Job.status == "dead").order_by(Job.created_at)
    )
    return [f"job {job_id} ({name}) dead after {attempts} attempts: {error}" for job_id, name, attempts, error in dead]
