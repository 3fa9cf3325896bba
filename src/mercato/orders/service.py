"""Order use cases: placing an order from the cart (or, for staff, from a channel), reading it (now or as it
stood at an instant), the customer's note changes and cancellation, and reservation expiry.

Every change appends an ``order_events`` row in the same transaction; the order row is the projection of those
events (ARCHITECTURE.md). Stock moves go through the inventory service, coupon use through the promotions
service, prices through the one pricing function (``mercato.cart.rules.price``).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.cart import rules as pricing
from mercato.cart import service as cart_service
from mercato.cart.deps import CartOwner
from mercato.catalog.units import require_units
from mercato.db.queries import Paged
from mercato.errors import Forbidden, ValidationFailed
from mercato.identity import users_service
from mercato.identity.models import Role
from mercato.identity.principal import Principal
from mercato.inventory import service as inventory
from mercato.orders import events, money, notices, repository, rules
from mercato.orders.errors import InvalidTransition, OrderNotFound
from mercato.orders.models import Channel, Order, OrderEvent, OrderItem, OrderStatus, PaymentStatus, Priority
from mercato.orders.schemas import ChannelOrderCreate, OrderCreate, OrderRead
from mercato.platform import clock, jobs
from mercato.platform.context import services_of
from mercato.platform.email import queue_email
from mercato.promotions import service as promotions
from mercato.shipping import service as shipping

EXPIRE_JOB = "orders.expire"
#: Whether a payment attempt of an order is still waiting for the gateway: None, or when to look again (UTC).
#: The payments domain answers (:func:`mercato.payments.service.payment_in_flight`); the expiry job passes it in.
PaymentInFlight = Callable[[AsyncSession, uuid.UUID], Awaitable[datetime | None]]

STAFF = (Role.sales,)
Units = list[tuple[uuid.UUID, uuid.UUID | None, int]]


@dataclass(frozen=True)
class Customer:
    """Who an order is for: an account (``user_id``) and/or contact details (guests, channel orders)."""

    user_id: uuid.UUID | None
    email: str | None
    name: str | None = None
    phone: str | None = None


def is_staff(principal: Principal | None) -> bool:
    """Admins and sales staff see and manage every order."""
    return principal is not None and principal.may(*STAFF)


# --- placing --------------------------------------------------------------------------------------------------


async def place_order(
    session: AsyncSession, principal: Principal | None, owner: CartOwner, body: OrderCreate
) -> tuple[Order, str | None]:
    """Turn the caller's cart into a pending order in one transaction: price snapshot per line, totals from the
    pricing function (shipping from the chosen method or the cheapest one shipping to the address's country, tax
    from the destination's rate), coupon use counted, stock reserved, cart emptied, ``order.placed`` event,
    confirmation email queued, expiry job scheduled (API.md ``POST /orders``).

    Returns:
        The order and, for a guest, the order token (shown once; ``None`` for signed-in customers).

    Raises:
        ValidationFailed: empty cart (field ``cart``), guest without ``email``, a signed-in customer giving an
            ``email`` other than the account's, no or two shipping addresses,
            a shipping method that does not exist or does not ship to the address, methods of which none ships
            to the address's country.
        NotFound: a line's product is no longer for sale; another user's saved address.
        InsufficientStock: a line asks for more than is available.
        CouponInvalid: the cart's coupon is no longer usable (with its reason).
    """
    user_id = principal.user_id if principal is not None else None
    if user_id is None and body.email is None:
        raise ValidationFailed("Guests must give an email address for their order.", field="email")
    account_email = principal.user.get("email") if principal is not None else None
    if user_id is not None and body.email is not None and str(body.email).lower() != str(account_email).lower():
        # the order's email receives its messages and counts its coupon uses: a customer may not spend another's
        raise ValidationFailed(
            "A signed-in customer's order goes to the account's email; leave email out.", field="email"
        )
    cart = await cart_service.checkout_lines(session, owner)
    if cart is None or not cart.lines:
        raise ValidationFailed("The cart is empty.", field="cart")
    address = await _shipping_address(session, user_id, body)
    email = account_email if user_id is not None else body.email
    name = None
    if principal is not None and principal.user:
        name = " ".join(part for part in (principal.user.get("first_name"), principal.user.get("last_name")) if part)
    token = secrets.token_urlsafe(32) if user_id is None else None
    order = await _open_order(
        session,
        units=cart.lines,
        customer=Customer(user_id, email, name or None, address.get("phone")),
        address=address,
        shipping_method_id=body.shipping_method_id,
        coupon_code=cart.coupon_code,
        channel=Channel.web,
        notes=body.notes,
        actor_id=user_id,
        token=token,
        expires=True,
    )
    await cart_service.empty_cart(session, cart)
    return order, token


async def create_channel_order(session: AsyncSession, principal: Principal, body: ChannelOrderCreate) -> Order:
    """Staff enter an order taken on another channel (source 002) for a customer with or without an account.
    Stock is reserved as for web orders; the reservation does not expire, whatever the channel (``web``
    included): staff follow such orders up.

    Raises:
        ValidationFailed: a bad postal code, a shipping method that does not exist or does not ship there.
        NotFound: unknown ``user_id`` (field ``user_id``) or a product not for sale.
        InsufficientStock: a line asks for more than is available.
    """
    email = str(body.customer.email) if body.customer.email else None
    if body.user_id is not None:
        user = await users_service.find_user(session, body.user_id)
        if user is None:
            raise OrderNotFound("No such customer account.", field="user_id")
        email = email or user.email
    merged: dict[tuple[uuid.UUID, uuid.UUID | None], int] = {}
    for item in body.items:
        merged[(item.product_id, item.variant_id)] = merged.get((item.product_id, item.variant_id), 0) + item.quantity
    return await _open_order(
        session,
        units=[(product_id, variant_id, quantity) for (product_id, variant_id), quantity in merged.items()],
        customer=Customer(body.user_id, email, body.customer.name, body.customer.phone),
        address=users_service.checked_address(body.shipping_address),
        shipping_method_id=body.shipping_method_id,
        coupon_code=None,
        channel=body.channel,
        notes=body.notes,
        actor_id=principal.user_id,
        priority=body.priority,
        expected_delivery_date=body.expected_delivery_date,
        expires=False,
    )


async def _shipping_address(session: AsyncSession, user_id: uuid.UUID | None, body: OrderCreate) -> dict[str, Any]:
    if (body.shipping_address is None) == (body.shipping_address_id is None):
        raise ValidationFailed("Give either shipping_address or shipping_address_id.", field="shipping_address")
    if body.shipping_address is not None:
        return users_service.checked_address(body.shipping_address)
    if user_id is None:
        raise ValidationFailed("Guests give a shipping_address.", field="shipping_address_id")
    assert body.shipping_address_id is not None
    return await users_service.saved_address(session, user_id, body.shipping_address_id)


async def _open_order(
    session: AsyncSession,
    *,
    units: Units,
    customer: Customer,
    address: dict[str, Any],
    shipping_method_id: uuid.UUID | None,
    coupon_code: str | None,
    channel: Channel,
    notes: str | None,
    actor_id: uuid.UUID | None,
    expires: bool,
    token: str | None = None,
    priority: Priority = Priority.normal,
    expected_delivery_date: Any = None,
) -> Order:
    services = services_of(session)
    now = clock.now()
    sellable = await require_units(session, [(product_id, variant_id) for product_id, variant_id, _ in units])
    lines = [pricing.Line((p, v), sellable[(p, v)].unit_price, quantity) for p, v, quantity in units]
    order_id = clock.new_id()
    discount = None
    coupon = None
    if coupon_code:  # the coupon's row lock comes before the stock rows' (see _cancel)
        subtotal = pricing.price(lines).subtotal
        coupon = await promotions.redeem(
            session,
            coupon_code,
            order_id=order_id,
            user_id=customer.user_id,
            email=customer.email,
            subtotal=subtotal,
            now=now,
        )
        discount = promotions.discount_of(coupon)
    # shipping: the chosen method, or the cheapest for the subtotal after discount (free_over counts);
    # None when the store has no shipping methods at all
    discounted = pricing.price(lines, discount=discount)
    quote = await shipping.quote(
        session,
        country=address["country"],
        units=units,
        method_id=shipping_method_id,
        subtotal=discounted.subtotal - discounted.discount_total,
        known_units=sellable,
        now=now,
    )
    tax_rate = await shipping.tax_rate(session, address["country"], address.get("region"))
    totals = pricing.price(
        lines, discount=discount, shipping=quote.shipping if quote is not None else None, tax_rate=tax_rate
    )
    if expected_delivery_date is None and quote is not None:
        expected_delivery_date = quote.delivery.max_date
    seq = await repository.next_seq(session)
    number = rules.order_number(seq)
    ttl = services.settings.reservation_ttl
    order = Order(
        id=order_id,
        seq=seq,
        number=number,
        user_id=customer.user_id,
        status=OrderStatus.pending,
        payment_status=PaymentStatus.unpaid,
        channel=channel,
        priority=priority,
        currency=services.settings.currency,
        subtotal=totals.subtotal,
        discount_total=totals.discount_total,
        shipping_total=totals.shipping_total,
        tax_total=totals.tax_total,
        total=totals.total,
        coupon_id=coupon.id if coupon is not None else None,
        coupon_code=coupon.code if coupon is not None else None,
        customer_name=customer.name,
        customer_email=customer.email,
        customer_phone=customer.phone,
        shipping_address=address,
        shipping_method=quote.snapshot if quote is not None else None,
        expected_delivery_date=expected_delivery_date,
        notes=notes,
        token_hash=rules.token_hash(token) if token else None,
        reservation_expires_at=now + timedelta(seconds=ttl) if expires else None,
        created_at=now,
        updated_at=now,
        items=[
            OrderItem(
                id=clock.new_id(),
                position=position,
                product_id=line.key[0],  # type: ignore[index]
                variant_id=line.key[1],  # type: ignore[index]
                name=sellable[line.key].name,  # type: ignore[index]
                sku=sellable[line.key].sku,  # type: ignore[index]
                unit_price=line.unit_price,
                quantity=line.quantity,
                line_total=line.line_total,
                discount=line.discount,
            )
            for position, line in enumerate(totals.lines)
        ],
    )
    session.add(order)
    await session.flush()
    await inventory.reserve(session, units, reference=number, actor_id=actor_id)
    placed = OrderRead.model_validate(order).model_dump(mode="json")
    events.append(session, order, "order.placed", placed, actor_id, 1, now)
    if order.total == 0:  # nothing to pay (a 100 % coupon): paid at once, stock committed
        await money.mark_paid(session, order, payment_id=None, amount=order.total, actor_id=actor_id)
    if order.reservation_expires_at is not None:
        jobs.enqueue(session, EXPIRE_JOB, {"order_id": str(order.id)}, run_at=order.reservation_expires_at)
    if customer.email:
        _confirmation_email(session, order)
    await session.flush()
    return order


def _confirmation_email(session: AsyncSession, order: Order) -> None:
    assert order.customer_email is not None
    lines = "\n".join(f"  {item.quantity} × {item.name}  {item.line_total}" for item in order.items)
    queue_email(
        session,
        to=order.customer_email,
        subject=f"Your order {order.number}",
        text=(
            f"Thank you for your order {order.number}.\n\n{lines}\n\n"
            f"Subtotal: {order.subtotal} {order.currency}\nDiscount: {order.discount_total} {order.currency}\n"
            f"Shipping: {order.shipping_total} {order.currency}\nTax: {order.tax_total} {order.currency}\n"
            f"Total: {order.total} {order.currency}\n"
        ),
    )


# --- reading --------------------------------------------------------------------------------------------------


async def get_order(
    session: AsyncSession,
    principal: Principal | None,
    order_id: uuid.UUID,
    *,
    order_token: str | None = None,
    lock: bool = False,
    customer_or_admin: bool = False,
) -> Order:
    """The order if the caller may see it: staff, its customer, or a guest with its order token.

    ``lock=True`` is for a caller about to change the order: it takes the order's row lock, and only the order's
    own customer (or guest with its token) or an admin may go on; sales staff read orders but do not change
    them (API.md: ``PATCH``/``DELETE /orders/{id}`` are "C (own), A"). ``customer_or_admin=True`` applies the same
    rule to a read, for the routes API.md lists as "C (own), A" (``GET /orders/{id}/tracking``, ``/shipping``).

    Raises:
        OrderNotFound: no such order, or not the caller's (never reveals that it exists).
        Forbidden: ``lock`` or ``customer_or_admin``, and the caller is staff without the admin role, and not the
            order's customer.
    """
    order = await repository.order(session, order_id, lock=lock)
    if order is None or not (is_staff(principal) or _owns(principal, order, order_token)):
        raise OrderNotFound(f"No order {order_id}.")
    if (lock or customer_or_admin) and not (
        _owns(principal, order, order_token) or (principal is not None and principal.is_admin)
    ):
        if lock:
            raise Forbidden("Sales staff may read this order; only its customer or an admin may change it.")
        raise Forbidden("Only the order's customer or an admin may see this.")
    return order


def _owns(principal: Principal | None, order: Order, order_token: str | None) -> bool:
    """The caller is the order's customer, or a guest holding its order token."""
    if principal is not None and principal.user_id is not None and principal.user_id == order.user_id:
        return True
    return bool(
        order_token and order.token_hash and secrets.compare_digest(order.token_hash, rules.token_hash(order_token))
    )


async def order_as_of(
    session: AsyncSession, principal: Principal | None, order_id: uuid.UUID, at: datetime, *, order_token: str | None
) -> OrderRead:
    """The order as it stood at ``at`` (UTC), rebuilt from its events up to and including that instant.

    Raises:
        OrderNotFound: not visible to the caller, or it did not exist yet at ``at``.
    """
    await get_order(session, principal, order_id, order_token=order_token)
    history = await repository.events(session, order_id, until=at)
    if not history:
        raise OrderNotFound(f"Order {order_id} did not exist at {at.isoformat()}.")
    state: dict[str, Any] = {}
    for event in history:
        state.update(event.data)
        state["status"] = event.status
        state["updated_at"] = event.created_at
    return OrderRead.model_validate(state)


async def order_events(
    session: AsyncSession,
    principal: Principal | None,
    order_id: uuid.UUID,
    *,
    order_token: str | None,
    page: int,
    limit: int,
) -> Paged[OrderEvent]:
    """A page of the order's history, oldest first. Raises :class:`OrderNotFound` like :func:`get_order`."""
    await get_order(session, principal, order_id, order_token=order_token)
    return await repository.paged_events(session, order_id, page=page, limit=limit)


async def list_orders(session: AsyncSession, filters: repository.OrderFilter, *, page: int, limit: int) -> Paged[Order]:
    """Orders matching ``filters`` (the router scopes customers to their own), newest first."""
    return await repository.list_orders(session, filters, page=page, limit=limit)


async def priority_orders(session: AsyncSession, *, page: int, limit: int) -> Paged[Order]:
    """Open orders by expected delivery date (source 002's priority list)."""
    return await repository.priority_orders(session, page=page, limit=limit)


async def unfinished_orders_with_variant(
    session: AsyncSession, product_id: uuid.UUID, variant_id: uuid.UUID, *, limit: int = 5
) -> list[str]:
    """Numbers of the orders (at most ``limit``, e.g. ``["MC-000123"]``) with a line of the variant that are not
    finished yet (:data:`mercato.orders.rules.UNFINISHED_STATUSES`: pending, processing, shipped): they may still
    be paid, cancelled or shipped, which moves that variant's stock. Empty when no such order exists."""
    return await repository.unfinished_with_variant(session, product_id, variant_id, limit=limit)


# --- changing -------------------------------------------------------------------------------------------------


async def update_notes(
    session: AsyncSession,
    principal: Principal | None,
    order_id: uuid.UUID,
    notes: str | None,
    *,
    order_token: str | None,
) -> Order:
    """Change the order's notes: its customer while it is pending, an admin at any time (sales staff only read
    it); appends ``order.updated``.

    Raises:
        OrderNotFound: not the caller's order.
        InvalidTransition: a customer editing an order that is no longer pending.
    """
    order = await get_order(session, principal, order_id, order_token=order_token, lock=True)
    if not is_staff(principal) and order.status != OrderStatus.pending:
        raise InvalidTransition(f"Order {order.number} is {order.status}; notes can change only while pending.")
    if notes != order.notes:
        order.notes = notes
        await events.record(session, order, "order.updated", {"notes": notes}, _actor(principal))
    return order


async def cancel_order(
    session: AsyncSession,
    principal: Principal | None,
    order_id: uuid.UUID,
    *,
    order_token: str | None,
    reason: str = "customer",
    note: str | None = None,
) -> Order:
    """Cancel a pending or processing order: releases reserved stock (pending) or returns committed stock to on
    hand (processing), gives the coupon use back, appends ``order.cancelled`` and, when it was paid, enqueues the
    full refund (``payments.refund_cancelled_order``, run right after commit) (API.md ``DELETE /orders/{id}``).

    Raises:
        OrderNotFound: not the caller's order.
        InvalidTransition: the order is shipped, delivered, returned or already cancelled.
    """
    order = await get_order(session, principal, order_id, order_token=order_token, lock=True)
    await _cancel(session, order, reason=reason, actor_id=_actor(principal), note=note)
    return order


async def _cancel(
    session: AsyncSession, order: Order, *, reason: str, actor_id: uuid.UUID | None, note: str | None = None
) -> None:
    if not rules.can_move(order.status, OrderStatus.cancelled):
        raise InvalidTransition(f"Order {order.number} is {order.status} and cannot be cancelled.")
    units = [(item.product_id, item.variant_id, item.quantity) for item in order.items]
    # Lock order (ARCHITECTURE.md: row locks in a fixed order): the coupon row before the stock rows, as placing an
    # order does (it counts the coupon use, then reserves); the other way round, a cancellation and a placement
    # with the same coupon and product could deadlock on PostgreSQL.
    if order.coupon_id is not None:
        await promotions.release(session, order_id=order.id, now=clock.now())
    if order.status == OrderStatus.pending:
        await inventory.release(session, units, reference=order.number, reason="order.cancelled", actor_id=actor_id)
    else:
        await inventory.restock(session, units, reference=order.number, reason="order.cancelled", actor_id=actor_id)
    if order.payment_status in (PaymentStatus.paid, PaymentStatus.partially_refunded):
        # API.md: cancelling a paid order refunds it; the gateway call happens after commit, in the job
        jobs.enqueue(session, money.REFUND_CANCELLED_JOB, {"order_id": str(order.id)})
    order.status = OrderStatus.cancelled
    order.cancel_reason = reason
    order.reservation_expires_at = None
    data: dict[str, Any] = {"cancel_reason": reason, "reservation_expires_at": None}
    if note is not None:
        data["note"] = note
    await events.record(session, order, "order.cancelled", data, actor_id)
    notices.notify(
        session, order, "has been cancelled", notices.CANCELLED.get(reason, notices.CANCELLED["staff"]), note
    )


async def expire_order(session: AsyncSession, order_id: uuid.UUID, *, payment_in_flight: PaymentInFlight) -> bool:
    """Cancel an unpaid order whose reservation has passed ``MERCATO_RESERVATION_TTL`` (reason ``expired``).
    Safe to run more than once: an order that was paid, confirmed, cancelled or extended is left alone.

    A customer paying at the deadline keeps the order: while ``payment_in_flight`` reports an attempt of it still
    waiting for the gateway, the order and its reserved units are left as they are and the expiry job is
    scheduled again for when it says to look again. If the attempt succeeds meanwhile, the payment pays the order
    (its reserved units are sold, it is no longer pending); once the attempt has failed (or the gateway never
    took it), the next look cancels the order. ``payment_in_flight`` is asked after the order's row lock is
    taken, and a payment records its attempt under that lock: an attempt is either seen here, or made after the
    cancellation and refused (the order is no longer payable) — never charged for an order cancelled under it.

    Args:
        payment_in_flight: the payments domain's answer, for the order, to "is an attempt still waiting for the
            gateway" (:func:`mercato.payments.service.payment_in_flight`): None, or when to look again (UTC).

    Returns:
        True when the order was cancelled now.
    """
    order = await repository.order(session, order_id, lock=True)
    if order is None or order.status != OrderStatus.pending or order.reservation_expires_at is None:
        return False
    if order.payment_status not in (PaymentStatus.unpaid, PaymentStatus.failed):
        return False
    if order.reservation_expires_at > clock.now():
        jobs.enqueue(session, EXPIRE_JOB, {"order_id": str(order.id)}, run_at=order.reservation_expires_at)
        return False
    look_again = await payment_in_flight(session, order.id)
    if look_again is not None:
        jobs.enqueue(session, EXPIRE_JOB, {"order_id": str(order.id)}, run_at=look_again)
        return False
    await _cancel(session, order, reason="expired", actor_id=None)
    return True


def _actor(principal: Principal | None) -> uuid.UUID | None:
    return principal.user_id if principal is not None else None
