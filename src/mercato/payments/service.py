"""Payment use cases: paying an order, refunds, reconciliation after crashes and timeouts, gateway callbacks,
saved cards (API.md "Payments"; ARCHITECTURE.md "money POSTs run as short steps").

Paying and refunding never call the gateway inside an open write transaction. Each runs three short steps:

1. record the attempt (``pending``) under the order's row lock, and schedule a ``payments.reconcile`` job for
   it, then commit;
2. call the gateway with the attempt's id as its idempotency key (bounded by ``MERCATO_GATEWAY_TIMEOUT``);
3. record the answer and move the order (``order.paid`` / ``order.payment_failed`` / ``order.refunded``), commit.

If the process dies between 2 and 3, the attempt stays ``pending`` and the durable reconcile job (due a little
after the gateway timeout) asks the gateway what happened and finishes step 3 — so the order is paid exactly once.
A charge the gateway took for an attempt we could no longer apply (the order was paid another way, or cancelled
meanwhile) is refunded in full: money always reconciles (``mercato check`` → ``payments.money_reconciles``).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

import structlog
from cryptography.fernet import InvalidToken
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.db.queries import Paged
from mercato.errors import Forbidden
from mercato.identity.models import Role
from mercato.identity.principal import Principal
from mercato.orders import money
from mercato.orders import service as orders
from mercato.orders.errors import InvalidTransition
from mercato.orders.models import Order, OrderStatus
from mercato.payments import gateways, repository, vault
from mercato.payments.errors import (
    PaymentDeclined,
    PaymentInProgress,
    PaymentMethodNotFound,
    PaymentNotFound,
    RefundFailed,
    RefundNotAllowed,
)
from mercato.payments.gateways.base import Card, Gateway, GatewayUnavailable, Outcome, UnknownToken
from mercato.payments.models import Payment, PaymentMethod, PaymentState, Refund, RefundState, WebhookEvent
from mercato.payments.schemas import MethodCreate, PaymentCreate, RefundCreate
from mercato.platform import clock, jobs
from mercato.platform.context import Services, services_of
from mercato.platform.idempotency import IdempotencyMismatch

log = structlog.get_logger("mercato.payments")
RECONCILE_JOB = "payments.reconcile"
#: ``failure_reason`` of an attempt the gateway did not answer in time (the charge may still land).
TIMEOUT = "gateway_timeout"
#: ``reason`` of the refunds that give a cancelled order's money back (``payments.refund_cancelled_order``).
CANCELLED_REASON = "order cancelled"
T = TypeVar("T")
#: Orders whose units left the warehouse, so a refund may put them back on hand (a processing order's units go
#: back by cancelling it, never by a refund: one way back, so stock is never returned twice).
RESTOCKABLE = (OrderStatus.shipped, OrderStatus.delivered, OrderStatus.returned)


def is_admin(principal: Principal | None) -> bool:
    """Admins see every payment and refund."""
    return principal is not None and principal.may(Role.admin)


async def _call(services: Services, call: Awaitable[T]) -> T:
    """Await a gateway call for at most ``MERCATO_GATEWAY_TIMEOUT`` seconds (→ :class:`GatewayUnavailable`)."""
    try:
        async with asyncio.timeout(services.settings.gateway_timeout):
            return await call
    except TimeoutError as exc:
        raise GatewayUnavailable("The payment gateway did not answer in time; nothing was charged twice.") from exc


def _reconcile_at(services: Services) -> timedelta:
    return timedelta(seconds=2 * services.settings.gateway_timeout + 5)


def _check_same_request(stored: str | None, fingerprint: str | None) -> None:
    """Refuse a request that reuses the ``Idempotency-Key`` of an earlier attempt made by another request.

    A failed or timed-out money POST frees its key for a retry (``Idempotency.run_steps``), but the attempt it
    recorded stays tied to the key: only the *same* request (same fingerprint) may pick it up again.

    Args:
        stored: the earlier attempt's ``request_fingerprint`` (None for rows recorded before fingerprints were).
        fingerprint: this request's :attr:`~mercato.web.idempotency.Idempotency.fingerprint` (None: not compared).

    Raises:
        IdempotencyMismatch: both are known and differ (422 ``idempotency-mismatch``, API.md §1 "Idempotency").
    """
    if stored is not None and fingerprint is not None and stored != fingerprint:
        raise IdempotencyMismatch("This Idempotency-Key was already used for a different request; use a new key.")


# --- paying ---------------------------------------------------------------------------------------------------


async def pay(
    services: Services,
    principal: Principal | None,
    body: PaymentCreate,
    *,
    order_token: str | None,
    request_key: str | None = None,
    request_fingerprint: str | None = None,
) -> Payment:
    """Charge the order's total (API.md ``POST /payments``) in the three steps of the module docstring.

    ``request_key`` (:attr:`~mercato.web.idempotency.Idempotency.reference` of the client's ``Idempotency-Key``)
    ties the attempt to the request: a retry after a timeout asks the gateway again *with the same gateway key*
    (so a charge that landed late is found, never repeated), a retry after success returns the same payment.
    ``request_fingerprint`` (:attr:`~mercato.web.idempotency.Idempotency.fingerprint`) is stored with the attempt:
    a later request with the same key and another body never gets (or pays through) this attempt.

    Returns:
        The completed payment; the order is ``processing`` and ``paid``, its stock committed.

    Raises:
        IdempotencyMismatch: the key already made an attempt for a different request (another order or card; 422).
        OrderNotFound: not the caller's order (guests: wrong or missing ``X-Order-Token``).
        InvalidTransition: the order is already paid, cancelled or otherwise not payable (409); also when it was
            cancelled while the gateway charged (the charge is then refunded in full).
        PaymentInProgress: another payment of this order is running (409).
        PaymentMethodNotFound: ``payment_method_id`` is not one of the caller's saved methods.
        UnknownToken: the gateway does not know ``payment_token`` (422).
        PaymentDeclined: declined (402); the failed attempt is recorded, the order stays payable.
        GatewayUnavailable: the gateway timed out or failed (503); the order stays payable. Also when the gateway
            took the charge but has not decided it (Stripe ``processing``): the attempt stays ``pending`` (a new
            payment of the order is 409 meanwhile) until the reconcile job or a webhook records the decision.
    """
    gateway = gateways.active(services)
    card = None
    if body.payment_token is not None:
        card = await gateway.card(body.payment_token, key=_card_key(request_key, body.payment_token))
    user_id = principal.user_id if principal is not None else None
    async with services.db.session(write=True) as session:
        earlier = await repository.payment_for_request(session, request_key) if request_key else None
        if earlier is not None:
            _check_same_request(earlier.request_fingerprint, request_fingerprint)
        order = await orders.get_order(session, principal, body.order_id, order_token=order_token, lock=True)
        if earlier is not None and earlier.status != PaymentState.failed:
            if earlier.status == PaymentState.pending:
                raise PaymentInProgress(f"This payment of order {order.number} is still being processed.")
            if not earlier.applied:
                raise _cancelled_while_paying(order)
            return earlier  # completed (or refunded since): the request's answer
        if earlier is not None and earlier.failure_reason != TIMEOUT:
            raise _declined(earlier)
        money.check_payable(order)
        running = await repository.pending_payment(session, order.id)
        if running is not None:
            raise PaymentInProgress(f"A payment of order {order.number} is already being processed.")
        if card is None:
            card = await _saved_card(session, services, user_id, body.payment_method_id)
        if earlier is not None:  # retry a timed-out attempt under its own gateway key
            payment = earlier
            payment.status = PaymentState.pending
            payment.failure_reason = None
        else:
            payment = Payment(
                id=clock.new_id(),
                order_id=order.id,
                user_id=order.user_id,
                amount=order.total,
                currency=order.currency,
                status=PaymentState.pending,
                gateway=gateway.name,
                method_brand=card.brand,
                method_last4=card.last4,
                payment_method_id=body.payment_method_id,
                request_key=request_key,
                request_fingerprint=request_fingerprint if request_key else None,
            )
            session.add(payment)
        safety_net = jobs.enqueue(
            session, RECONCILE_JOB, {"payment_id": str(payment.id)}, run_at=clock.now() + _reconcile_at(services)
        )
    try:
        outcome = await _call(
            services,
            gateway.charge(key=str(payment.id), amount=payment.amount, currency=payment.currency, token=card.token),
        )
    except GatewayUnavailable:
        await _settle_payment(services, payment.id, None, actor_id=user_id)  # the safety net stays: ask again later
        raise
    except UnknownToken:  # the gateway refused the saved method itself (e.g. detached): a failed attempt
        declined = Outcome("failed", None, payment.amount, "invalid_payment_method")
        await _settle_payment(services, payment.id, declined, actor_id=user_id, done=safety_net)
        raise
    undecided = outcome.status == "pending"  # the gateway decides later: the safety net (or a webhook) settles it
    payment = await _settle_payment(
        services, payment.id, outcome, actor_id=user_id, done=None if undecided else safety_net
    )
    if payment.status == PaymentState.pending:
        raise GatewayUnavailable(
            "The payment gateway is still processing this payment: it stays pending and is settled when the "
            "gateway decides; retry with the same Idempotency-Key for its answer."
        )
    if payment.status == PaymentState.failed:
        raise _declined(payment)
    if not payment.applied:
        raise _cancelled_while_paying(order)
    return payment


def _card_key(request_key: str | None, token: str) -> str | None:
    """The gateway idempotency key for resolving ``token`` in the payment request ``request_key``: a retry of the
    request (same key and token) resolves it to the same reusable card (Stripe: a ``tok_...`` is single-use, and
    the retried charge must name the same PaymentMethod); another token under the key gets another key, so the
    request mismatch is refused by :func:`_check_same_request` (422), not by the gateway. None without a key."""
    if request_key is None:
        return None
    return hashlib.sha256(f"{request_key}\n{token}".encode()).hexdigest() + ":pm"


def _cancelled_while_paying(order: Order) -> InvalidTransition:
    return InvalidTransition(
        f"Order {order.number} was cancelled while the card was charged; the charge is refunded in full."
    )


def _declined(payment: Payment) -> PaymentDeclined:
    return PaymentDeclined(
        f"The card was declined ({payment.failure_reason}).", reason=payment.failure_reason, payment_id=str(payment.id)
    )


async def _saved_card(
    session: AsyncSession, services: Services, user_id: uuid.UUID | None, method_id: uuid.UUID | None
) -> Card:
    saved = await repository.method(session, user_id, method_id) if user_id and method_id else None
    if saved is None:
        raise PaymentMethodNotFound("No such saved payment method.", field="payment_method_id")
    try:
        token = vault.decrypt(services.settings.secret, saved.token_encrypted)
    except InvalidToken:  # sealed under an earlier MERCATO_SECRET_KEY: the card must be saved again
        raise PaymentMethodNotFound(
            "This saved card can no longer be used; pay with a new card or save it again.", field="payment_method_id"
        ) from None
    return Card(saved.brand, saved.last4, saved.exp_month, saved.exp_year, token)


async def _lock(session: AsyncSession, payment_id: uuid.UUID) -> tuple[Payment, Order]:
    """The payment and its order, both row-locked — the order first, as every path that locks both does
    (ARCHITECTURE.md: row locks in a consistent order, so concurrent settlements never deadlock)."""
    found = await repository.payment(session, payment_id)
    assert found is not None
    order = await money.locked_order(session, found.order_id)
    payment = await repository.payment(session, payment_id, lock=True)
    assert payment is not None
    return payment, order


async def _settle_payment(
    services: Services,
    payment_id: uuid.UUID,
    outcome: Outcome | None,
    *,
    actor_id: uuid.UUID | None,
    done: uuid.UUID | None = None,
) -> Payment:
    """Step 3: record the gateway's answer for a pending attempt and move the order. ``outcome`` None means no
    answer (timeout, or the gateway never took the charge): the attempt fails with ``gateway_timeout``; the
    reconcile job still asks the gateway later, in case the charge went through after all. ``done`` is the
    attempt's reconcile job, dropped in the same transaction once the gateway's definite answer is recorded. A
    ``pending`` outcome (the gateway took the charge, undecided yet) keeps the attempt pending with the gateway's
    reference, for the reconcile job or a webhook to settle."""
    async with services.db.session(write=True) as session:
        if done is not None:
            await jobs.cancel(session, done)
        payment, order = await _lock(session, payment_id)
        if payment.status != PaymentState.pending:
            return payment  # settled already (a concurrent reconcile or webhook)
        if outcome is not None and outcome.status == "pending":
            payment.gateway_reference = outcome.reference
            return payment
        if outcome is None or outcome.status == "failed":
            payment.status = PaymentState.failed
            payment.failure_reason = outcome.failure_reason if outcome is not None else TIMEOUT
            payment.gateway_reference = outcome.reference if outcome is not None else None
            if outcome is not None and _payable(order):  # a decline never touches an order paid meanwhile
                await money.mark_payment_failed(
                    session, order, payment_id=payment.id, reason=payment.failure_reason, actor_id=actor_id
                )
            return payment
        await _apply_success(session, payment, order, outcome, actor_id=actor_id)
        return payment


def _payable(order: Order) -> bool:
    return order.status in (OrderStatus.pending, OrderStatus.processing) and order.payment_status in money.PAYABLE


async def _apply_success(
    session: AsyncSession, payment: Payment, order: Order, outcome: Outcome, *, actor_id: uuid.UUID | None
) -> None:
    """Record a charge the gateway made: the order is paid if it still can be, else the money goes back."""
    payment.status = PaymentState.completed
    payment.gateway_reference = outcome.reference
    payment.failure_reason = None
    if _payable(order):
        payment.applied = True
        await money.mark_paid(session, order, payment_id=payment.id, amount=payment.amount, actor_id=actor_id)
    else:  # cancelled, or paid by another attempt, while the gateway charged: give the money back
        _refund_later(session, payment, reason="order no longer payable when the charge completed")


async def reconcile_payment(services: Services, payment_id: uuid.UUID) -> str:
    """Ask the gateway what became of an attempt and record it (the ``payments.reconcile`` job; safe to repeat).

    A ``pending`` attempt is settled from the gateway's answer (never taken → failed). A ``failed`` attempt the
    gateway charged after all (a late answer after our timeout) is recorded as completed: it pays the order if
    the order is still payable, else it is refunded in full.

    Returns:
        What was done: ``settled``, ``late-charge`` or ``nothing``.

    Raises:
        GatewayUnavailable: the gateway did not answer, or cannot tell yet (its lookup lags behind its writes,
            e.g. Stripe's search): the job runs again later.
    """
    async with services.db.session(write=False) as session:
        payment = await repository.payment(session, payment_id)
    if payment is None or payment.status not in (PaymentState.pending, PaymentState.failed):
        return "nothing"
    if payment.status == PaymentState.failed and payment.failure_reason != TIMEOUT:
        return "nothing"
    gateway = gateways.by_name(services, payment.gateway)
    outcome = await _call(services, gateway.find_charge(str(payment.id), reference=payment.gateway_reference))
    if outcome is None and (clock.now() - payment.updated_at).total_seconds() < gateway.lookup_lag:
        raise GatewayUnavailable(f"The gateway cannot tell yet whether attempt {payment.id} was charged.")
    if outcome is not None and outcome.status == "pending":
        raise GatewayUnavailable(f"The gateway has not decided attempt {payment.id} yet.")
    if payment.status == PaymentState.pending:
        await _settle_payment(services, payment.id, outcome, actor_id=None)
        log.info("payment reconciled", payment_id=str(payment.id), found=outcome is not None)
        return "settled"
    if outcome is None or outcome.status != "succeeded":
        return "nothing"
    async with services.db.session(write=True) as session:  # a late success of an attempt we gave up on
        late, order = await _lock(session, payment.id)
        if late.status != PaymentState.failed:
            return "nothing"
        await _apply_success(session, late, order, outcome, actor_id=None)
    log.warning("late charge recorded", payment_id=str(payment.id), order_paid=late.applied)
    return "late-charge"


async def payment_in_flight(session: AsyncSession, order_id: uuid.UUID) -> datetime | None:
    """When to look again at the order's payment attempt still waiting for the gateway — being charged right now,
    or taken and not decided yet (a Stripe PaymentIntent ``processing``) — or None when no attempt of the order
    is (API.md "Inventory": reservation expiry; ``orders.expire`` does not cancel an order under a charge that
    may still succeed).

    The time is after the attempt's reconcile job is first due (it asks the gateway and records the answer), and
    after as long again as the attempt has been waiting, at most :data:`mercato.platform.jobs.MAX_BACKOFF_S`: an
    attempt undecided for days (a bank debit) is looked at less and less often, as its reconcile job retries.

    The caller holds the order's row lock (a payment records its attempt under it, so none starts unseen).

    Returns:
        An aware UTC instant, or None.
    """
    running = await repository.pending_payment(session, order_id)
    if running is None:
        return None
    now = clock.now()
    waited = now - running.updated_at
    return now + min(max(_reconcile_at(services_of(session)), waited), timedelta(seconds=jobs.MAX_BACKOFF_S))


def _refund_later(session: AsyncSession, payment: Payment, *, reason: str) -> None:
    """Record a full refund of ``payment`` and let the reconcile job carry it out (outside this transaction)."""
    refund = Refund(
        id=clock.new_id(),
        order_id=payment.order_id,
        payment_id=payment.id,
        amount=payment.amount - payment.refunded_amount,
        currency=payment.currency,
        reason=reason,
        restock=False,
        status=RefundState.pending,
    )
    session.add(refund)
    jobs.enqueue(session, RECONCILE_JOB, {"refund_id": str(refund.id)})


# --- refunds --------------------------------------------------------------------------------------------------


async def refund_order(
    services: Services,
    principal: Principal,
    order_id: uuid.UUID,
    body: RefundCreate,
    *,
    request_key: str | None = None,
    request_fingerprint: str | None = None,
) -> Refund:
    """Refund (part of) what the order's payment captured (API.md ``POST /orders/{id}/refund``, admins). A retry
    with the same ``request_key`` (the client's ``Idempotency-Key``) finishes the first refund, never a second;
    ``request_fingerprint`` is stored with it, so the same key with another body is refused.

    Raises:
        IdempotencyMismatch: the key already asked for a different refund (another order, amount or reason; 422).
        OrderNotFound: no such order.
        RefundNotAllowed: nothing captured, ``amount`` above captured − refunded (field ``amount``), or
            ``restock`` on an order whose stock was never committed or was already restocked (field ``restock``).
        RefundFailed: the gateway refused the refund (409); GatewayUnavailable: no answer (503, the refund stays
            pending and the reconcile job completes it).

    Returns:
        The refund: ``completed``, or ``pending`` when the gateway took it but has not decided yet (Stripe); a
        pending refund holds its amount and moves the payment and order only once the reconcile job or a refund
        webhook finds it succeeded.
    """
    return await _refund(
        services,
        principal,
        order_id=order_id,
        payment_id=None,
        body=body,
        request_key=request_key,
        request_fingerprint=request_fingerprint,
    )


async def refund_payment(
    services: Services,
    principal: Principal,
    payment_id: uuid.UUID,
    amount: Decimal | None,
    reason: str,
    *,
    request_key: str | None = None,
    request_fingerprint: str | None = None,
) -> Refund:
    """Refund (part of) one payment (API.md ``POST /payments/{id}/refund``); idempotency and errors as
    :func:`refund_order`, plus :class:`PaymentNotFound`."""
    body = RefundCreate(amount=amount, reason=reason, restock=False)
    return await _refund(
        services,
        principal,
        order_id=None,
        payment_id=payment_id,
        body=body,
        request_key=request_key,
        request_fingerprint=request_fingerprint,
    )


async def _refund(
    services: Services,
    principal: Principal | None,
    *,
    order_id: uuid.UUID | None,
    payment_id: uuid.UUID | None,
    body: RefundCreate,
    request_key: str | None,
    request_fingerprint: str | None,
) -> Refund:
    async with services.db.session(write=True) as session:
        earlier = await repository.refund_for_request(session, request_key) if request_key else None
        if earlier is not None:
            _check_same_request(earlier.request_fingerprint, request_fingerprint)
        if payment_id is not None:
            found = await repository.payment(session, payment_id)
            if found is None:
                raise PaymentNotFound(f"No payment {payment_id}.")
            order_id = found.order_id
        assert order_id is not None
        order = await orders.get_order(session, principal, order_id, lock=True)
        safety_net = None
        if earlier is not None:  # a retry of this request: finish that refund, never start a second one
            refund_id = earlier.id
        else:
            refund_id, safety_net = await _record_refund(
                session, services, order, payment_id, body, principal, request_key, request_fingerprint
            )
    refund = await _carry_out(services, refund_id, done=safety_net)
    if refund.status == RefundState.failed:
        raise RefundFailed(f"The gateway refused the refund ({refund.failure_reason}).")
    return refund


async def _record_refund(
    session: AsyncSession,
    services: Services,
    order: Order,
    payment_id: uuid.UUID | None,
    body: RefundCreate,
    principal: Principal | None,
    request_key: str | None,
    request_fingerprint: str | None,
) -> tuple[uuid.UUID, uuid.UUID]:
    """Step 1 of a refund, under the order's row lock: check the amount and restock rules, record it pending
    with who asked for it (``principal``'s user or API key). Returns the refund's id and its reconcile job's."""
    payment = await repository.payment(session, payment_id, lock=True) if payment_id else None
    if payment is None:
        payment = await repository.captured_payment(session, order.id)
    if payment is None or payment.status not in (PaymentState.completed, PaymentState.partially_refunded):
        raise RefundNotAllowed(f"Order {order.number} has no captured payment to refund.", field="amount")
    left = payment.amount - payment.refunded_amount - await repository.pending_refund_total(session, payment.id)
    amount = body.amount if body.amount is not None else left
    if amount <= 0 or amount > left:
        raise RefundNotAllowed(f"At most {left:.2f} {payment.currency} can be refunded.", field="amount")
    if body.restock and (order.status not in RESTOCKABLE or await repository.restocked(session, order.id)):
        raise RefundNotAllowed(
            f"Order {order.number} is {order.status}: only shipped, delivered or returned orders restock, once.",
            field="restock",
        )
    refund = Refund(
        id=clock.new_id(),
        order_id=order.id,
        payment_id=payment.id,
        amount=amount,
        currency=payment.currency,
        reason=body.reason,
        restock=body.restock,
        status=RefundState.pending,
        actor_id=principal.user_id if principal is not None else None,
        api_key_id=principal.api_key_id if principal is not None else None,
        request_key=request_key,
        request_fingerprint=request_fingerprint if request_key else None,
    )
    session.add(refund)
    job_id = jobs.enqueue(
        session, RECONCILE_JOB, {"refund_id": str(refund.id)}, run_at=clock.now() + _reconcile_at(services)
    )
    return refund.id, job_id


async def _carry_out(
    services: Services, refund_id: uuid.UUID, *, done: uuid.UUID | None = None, unattended: bool = False
) -> Refund:
    """Steps 2 and 3 of a pending refund: ask the gateway (idempotent per refund id) — or, when the gateway took
    it already and had not decided (it has a ``gateway_reference``), look it up — and record the answer (and drop
    the refund's reconcile job ``done`` with a definite one). ``unattended``: see :func:`_settle_refund`."""
    async with services.db.session(write=False) as session:
        refund = await repository.refund(session, refund_id)
        assert refund is not None
        payment = await repository.payment(session, refund.payment_id)
        assert payment is not None
    if refund.status != RefundState.pending:
        return refund
    gateway = gateways.by_name(services, payment.gateway)
    assert payment.gateway_reference is not None
    if refund.gateway_reference is not None:  # the gateway took it, undecided: what is it now?
        outcome = await _call(services, gateway.find_refund(refund.gateway_reference))
    else:
        outcome = await _call(
            services,
            gateway.refund(
                key=str(refund.id), reference=payment.gateway_reference, amount=refund.amount, currency=refund.currency
            ),
        )
    return await _settle_refund(services, refund.id, outcome, done=done, unattended=unattended)


async def _settle_refund(
    services: Services,
    refund_id: uuid.UUID,
    outcome: Outcome,
    *,
    done: uuid.UUID | None = None,
    unattended: bool = False,
) -> Refund:
    """Record the gateway's answer for a pending refund. ``succeeded``: the payment and (for the attempt that paid
    it) the order move, the customer is told; ``failed``: the refund is failed, the money state untouched;
    ``pending`` (taken, undecided): it stays pending with the gateway's reference, its reconcile job ``done`` kept,
    until the job or a refund webhook finds it decided.

    ``unattended`` says nobody waits for this answer (the reconcile job or a webhook found it, typically a Stripe
    refund that was ``pending`` and then failed): a refused refund of a cancelled order's money is then
    scheduled again in the same transaction (:func:`_refund_cancelled_again`). A caller that waits handles the
    refusal itself: an admin's request answers 409, the refund job of a cancelled order fails and is retried."""
    async with services.db.session(write=True) as session:
        if done is not None and outcome.status != "pending":
            await jobs.cancel(session, done)
        found = await repository.refund(session, refund_id)
        assert found is not None
        order = await money.locked_order(session, found.order_id)  # the order first, as every path locks
        payment = await repository.payment(session, found.payment_id, lock=True)
        refund = await repository.refund(session, refund_id, lock=True)
        assert payment is not None and refund is not None
        if refund.status != RefundState.pending:
            return refund
        refund.gateway_reference = outcome.reference
        if outcome.status == "pending":
            return refund
        if outcome.status == "failed":
            refund.status = RefundState.failed
            refund.failure_reason = outcome.failure_reason
            if not payment.applied:  # money we must give back and could not: a person has to look
                log.error("surplus charge refund failed", payment_id=str(payment.id), reason=outcome.failure_reason)
            elif unattended and order.status == OrderStatus.cancelled:  # the customer's money: give it back
                await _refund_cancelled_again(session, services, order)
            return refund
        refund.status = RefundState.completed
        payment.refunded_amount += refund.amount
        payment.status = (
            PaymentState.refunded if payment.refunded_amount >= payment.amount else PaymentState.partially_refunded
        )
        # Only the attempt that paid the order (``applied``; there is one) moves it. A surplus charge (it landed
        # after the order was paid another way, or cancelled) was never the order's money: its refund, before or
        # after the order's own, leaves the order as it is, and it never keeps the order's full refund from
        # making the order ``refunded`` (and restocking it).
        if payment.applied and order.payment_status in money.REFUNDABLE:
            await money.mark_refunded(
                session,
                order,
                refund_id=refund.id,
                amount=refund.amount,
                fully=payment.status == PaymentState.refunded,
                restock=refund.restock,
                actor_id=refund.actor_id,
                api_key_id=refund.api_key_id,
            )
        return refund


async def reconcile_refund(services: Services, refund_id: uuid.UUID) -> str:
    """Finish a pending refund (the ``payments.reconcile`` job, and refund webhooks): ask the gateway again with
    the same key, which either reports the refund it already made or makes it now; a refund the gateway took but
    had not decided (``gateway_reference`` set) is looked up by that reference.

    Returns:
        ``settled`` (now completed or failed), ``pending`` (the gateway still has not decided) or ``nothing``
        (no such refund, or not pending).

    Raises:
        GatewayUnavailable: the gateway did not answer.
    """
    async with services.db.session(write=False) as session:
        refund = await repository.refund(session, refund_id)
    if refund is None or refund.status != RefundState.pending:
        return "nothing"
    settled = await _carry_out(services, refund_id, unattended=True)
    return "pending" if settled.status == RefundState.pending else "settled"


async def _refund_cancelled_again(session: AsyncSession, services: Services, order: Order) -> None:
    """A refund of the cancelled ``order``'s money failed after its refund job had finished (the gateway took it,
    then refused it): schedule ``payments.refund_cancelled_order`` again, which refunds what the payment still
    holds in a new refund (a new id, so a new gateway idempotency key).

    The refund's failed attempts (reason :data:`CANCELLED_REASON`) count as tries of that job, so
    ``MERCATO_JOB_MAX_ATTEMPTS`` bounds them all, here and in the job's own retries; the job is due after the
    runner's backoff for that many tries. Once they are used up nothing is scheduled: ``mercato check``
    (``payments.cancelled_orders_refunded``) names the order for a person to refund."""
    failed = await repository.failed_refunds(session, order.id, CANCELLED_REASON)
    if failed >= services.settings.job_max_attempts:
        log.error("cancelled order refund given up", order_id=str(order.id), failed_attempts=failed)
        return
    run_at = clock.now() + timedelta(seconds=jobs.backoff_seconds(failed))
    jobs.enqueue(session, money.REFUND_CANCELLED_JOB, {"order_id": str(order.id)}, run_at=run_at, attempts=failed)


async def refund_cancelled_order(services: Services, order_id: uuid.UUID) -> None:
    """A paid order was cancelled: refund whatever its payment still holds (reason ``order cancelled``; the
    cancellation already put the stock back). Runs as the ``payments.refund_cancelled_order`` job.

    Safe to repeat: nothing left to refund, or a refund of it still waiting for the gateway (its reconcile job
    or a webhook settles it, and should the gateway then refuse it, this job is scheduled again:
    :func:`_refund_cancelled_again`) → nothing happens. Each attempt is a refund of its own (its id is the
    gateway's idempotency key), made only for what completed and pending refunds leave, so a retry never refunds
    the same money twice.

    Raises:
        RefundFailed: the gateway refused the refund; the failed attempt is recorded and the job runner retries
            with backoff until ``MERCATO_JOB_MAX_ATTEMPTS`` attempts in all failed, then marks the job dead
            (``mercato check`` then reports the order).
        GatewayUnavailable: the gateway did not answer; the refund stays pending for its reconcile job.
    """
    async with services.db.session(write=True) as session:
        order = await money.locked_order(session, order_id)
        payment = await repository.captured_payment(session, order.id)
        if payment is None:
            return
        left = payment.amount - payment.refunded_amount - await repository.pending_refund_total(session, payment.id)
        if left <= 0:
            return
        refund = Refund(
            id=clock.new_id(),
            order_id=order.id,
            payment_id=payment.id,
            amount=left,
            currency=payment.currency,
            reason=CANCELLED_REASON,
            restock=False,
            status=RefundState.pending,
        )
        session.add(refund)
        jobs.enqueue(
            session, RECONCILE_JOB, {"refund_id": str(refund.id)}, run_at=clock.now() + _reconcile_at(services)
        )
        number = order.number
    settled = await _carry_out(services, refund.id)
    if settled.status == RefundState.failed:  # the order still holds the money: fail the job so that it retries
        raise RefundFailed(
            f"The gateway refused the refund of {settled.amount:.2f} {settled.currency} for cancelled order "
            f"{number}: {settled.failure_reason}."
        )


# --- reading --------------------------------------------------------------------------------------------------


async def get_payment(session: AsyncSession, principal: Principal, payment_id: uuid.UUID) -> Payment:
    """The payment if the caller may see it (its customer, or an admin). Raises :class:`PaymentNotFound`."""
    payment = await repository.payment(session, payment_id)
    own = principal.user_id is not None and payment is not None and payment.user_id == principal.user_id
    if payment is None or not (is_admin(principal) or own):
        raise PaymentNotFound(f"No payment {payment_id}.")
    return payment


async def list_payments(
    session: AsyncSession, principal: Principal, *, order_id: uuid.UUID | None, page: int, limit: int
) -> Paged[Payment]:
    """The caller's payments (admins: everyone's), newest first, optionally of one order."""
    user_id = None if is_admin(principal) else principal.user_id
    if user_id is None and not is_admin(principal):
        raise Forbidden("API keys without a user cannot list payments.")
    return await repository.list_payments(session, user_id=user_id, order_id=order_id, page=page, limit=limit)


# --- saved methods --------------------------------------------------------------------------------------------


async def save_method(
    session: AsyncSession, services: Services, user_id: uuid.UUID, body: MethodCreate, card: Card
) -> PaymentMethod:
    """Save ``card`` (already resolved by the gateway from ``body.payment_token``) for the user, its token
    encrypted; the first saved method, or one saved with ``is_default``, becomes the default."""
    default = body.is_default or not await repository.has_methods(session, user_id)
    if default:
        await repository.clear_default(session, user_id)
    method = PaymentMethod(
        id=clock.new_id(),
        user_id=user_id,
        gateway=services.settings.payment_gateway,
        brand=card.brand,
        last4=card.last4,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        is_default=default,
        token_encrypted=vault.encrypt(services.settings.secret, card.token),
    )
    session.add(method)
    await session.flush()
    return method


async def list_methods(session: AsyncSession, user_id: uuid.UUID, *, page: int, limit: int) -> Paged[PaymentMethod]:
    """A page of the user's saved methods, default first, then newest."""
    return await repository.paged_methods(session, user_id, page=page, limit=limit)


async def delete_method(session: AsyncSession, user_id: uuid.UUID, method_id: uuid.UUID) -> None:
    """Forget a saved method (payments made with it keep brand and last4). Raises :class:`PaymentMethodNotFound`."""
    method = await repository.method(session, user_id, method_id)
    if method is None:
        raise PaymentMethodNotFound(f"No saved payment method {method_id}.")
    await session.delete(method)
    await session.flush()


async def forget_methods(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Forget every saved method of the user (account deletion: the encrypted gateway tokens, brands and last
    digits go; payments made with them keep brand and last4)."""
    await repository.delete_methods(session, user_id)


# --- webhooks -------------------------------------------------------------------------------------------------


async def handle_webhook(services: Services, gateway: Gateway, body: bytes, headers: Mapping[str, str]) -> bool:
    """Verify and apply a gateway callback: a charge or refund event makes us reconcile the attempt it names
    (we ask the gateway rather than trusting the payload's amounts). Each event id is applied once.

    Returns:
        True when the event was seen before (nothing done).

    Raises:
        MalformedWebhook (400), InvalidSignature (401): nothing is recorded or changed.
    """
    event = gateway.verify(body, headers, clock.now())
    seen = WebhookEvent(id=clock.new_id(), gateway=gateway.name, event_id=event.event_id, type=event.type)
    try:
        async with services.db.session(write=True) as session:
            session.add(seen)
    except IntegrityError:
        return True
    key = _uuid(event.key)
    try:
        if key is not None and event.type.startswith("charge.") and event.type != "charge.refunded":
            await reconcile_payment(services, key)
        elif key is not None and event.type.startswith("refund."):
            await reconcile_refund(services, key)
    except Exception:  # not handled: forget the event so that the gateway's redelivery is processed
        async with services.db.session(write=True) as session:
            await repository.forget_webhook(session, seen.id)
        raise
    log.info("payment webhook", gateway=gateway.name, type=event.type, event_id=event.event_id)
    return False


def _uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None
