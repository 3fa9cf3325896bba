"""The order workflow: staff move an order along its state machine (API.md "Orders": ``PUT /orders/{id}/status``
and source 003's verbs confirm / ship / cancel, plus delivered and returned), customers and staff follow it
(``GET /orders/{id}/tracking``) and change where it goes until it ships (``/orders/{id}/shipping``).

One function per move. Each takes the order's row lock, checks the move once against
:data:`mercato.orders.rules.TRANSITIONS` (:class:`InvalidTransition` otherwise), applies it, appends its event in
the same transaction (``data`` holds the changed fields, so ``?as_of=`` rebuilds work, plus ``note`` when given)
and queues an email to the customer when the order has an address to send it to.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.cart import rules as pricing
from mercato.errors import ValidationFailed
from mercato.identity import users_service
from mercato.identity.principal import Principal
from mercato.identity.schemas import AddressCreate
from mercato.inventory import service as inventory
from mercato.orders import events, notices, repository, rules, service
from mercato.orders.errors import InvalidTransition
from mercato.orders.models import Order, OrderStatus, PaymentStatus
from mercato.orders.schemas import OrderStatusChange, OrderTrackingRead, TrackingEventRead
from mercato.shipping import service as shipping_service

#: Where the shipping address may still change (not yet shipped, not cancelled).
ADDRESS_CHANGEABLE = rules.OPEN_STATUSES


# --- the moves (admins; the router checks the role) -------------------------------------------------------------


async def confirm(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID, *, note: str | None = None
) -> Order:
    """``pending → processing`` without a payment (e.g. cash on delivery, API.md "Orders"): the reserved stock is
    committed (on hand and reserved both drop), the reservation no longer expires, ``payment_status`` stays as it
    is. Appends ``order.confirmed``.

    A paid order is never pending (payment itself moves it to ``processing`` and commits its stock), so committing
    here cannot sell the same units twice.

    Raises:
        OrderNotFound: no such order.
        InvalidTransition: the order is not pending.
    """
    order = await _locked(session, principal, order_id)
    _check(order, OrderStatus.processing)
    await inventory.commit(
        session, _units(order), reference=order.number, reason="order.confirmed", actor_id=principal.user_id
    )
    order.status = OrderStatus.processing
    order.reservation_expires_at = None
    await events.record(
        session, order, "order.confirmed", _data({"reservation_expires_at": None}, note), principal.user_id
    )
    notices.notify(session, order, "is confirmed", "We are preparing your order.", note)
    return order


async def ship(
    session: AsyncSession,
    principal: Principal,
    order_id: uuid.UUID,
    *,
    carrier: str | None = None,
    tracking_number: str | None = None,
    note: str | None = None,
) -> Order:
    """``processing → shipped``: stores the carrier (default: the carrier of the order's shipping method) and the
    tracking number. Appends ``order.shipped``; the email carries the tracking details.

    Raises:
        OrderNotFound: no such order.
        InvalidTransition: the order is not processing (unpaid and unconfirmed, or already shipped, ...).
    """
    order = await _locked(session, principal, order_id)
    _check(order, OrderStatus.shipped)
    order.status = OrderStatus.shipped
    order.carrier = carrier or _method_carrier(order)
    order.tracking_number = tracking_number
    changed = {"carrier": order.carrier, "tracking_number": order.tracking_number}
    await events.record(session, order, "order.shipped", _data(changed, note), principal.user_id)
    details = [
        f"Carrier: {order.carrier or 'to be announced'}",
        f"Tracking number: {order.tracking_number or 'to be announced'}",
    ]
    if order.expected_delivery_date is not None:
        details.append(f"Estimated delivery: {order.expected_delivery_date.isoformat()}")
    notices.notify(session, order, "has shipped", "Your order is on its way.\n\n" + "\n".join(details), note)
    return order


async def deliver(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID, *, note: str | None = None
) -> Order:
    """``shipped → delivered``; appends ``order.delivered``.

    Raises:
        OrderNotFound: no such order.
        InvalidTransition: the order is not shipped.
    """
    order = await _locked(session, principal, order_id)
    _check(order, OrderStatus.delivered)
    order.status = OrderStatus.delivered
    await events.record(session, order, "order.delivered", _data({}, note), principal.user_id)
    notices.notify(session, order, "has been delivered", "Your order has been delivered. Enjoy!", note)
    return order


async def mark_returned(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID, *, note: str | None = None
) -> Order:
    """``delivered → returned`` (the goods came back); appends ``order.returned``. Stock and money are not
    touched here: a refund with ``restock: true`` (``POST /orders/{id}/refund``) puts the units back on hand.

    Raises:
        OrderNotFound: no such order.
        InvalidTransition: the order is not delivered.
    """
    order = await _locked(session, principal, order_id)
    _check(order, OrderStatus.returned)
    order.status = OrderStatus.returned
    await events.record(session, order, "order.returned", _data({}, note), principal.user_id)
    notices.notify(session, order, "has been returned", "We have received your return.", note)
    return order


async def cancel(session: AsyncSession, principal: Principal, order_id: uuid.UUID, *, note: str | None = None) -> Order:
    """Staff cancel a pending or processing order through :func:`mercato.orders.service.cancel_order` (reason
    ``staff``): reserved stock is released, committed stock returns to on hand, the coupon use is given back, a
    captured payment is refunded. The ``order.cancelled`` event carries ``note`` when given.

    Raises:
        OrderNotFound: no such order.
        InvalidTransition: the order is shipped, delivered, returned or already cancelled.
    """
    return await service.cancel_order(session, principal, order_id, order_token=None, reason="staff", note=note)


async def change_status(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID, body: OrderStatusChange
) -> Order:
    """``PUT /orders/{id}/status``: the move to ``body.status`` through the function of that move.

    Raises:
        ValidationFailed: ``carrier`` or ``tracking_number`` with a status other than ``shipped``.
        OrderNotFound: no such order.
        InvalidTransition: the move is not allowed from the order's status (including to ``pending``).
    """
    target = body.status
    if target != OrderStatus.shipped:
        for field in ("carrier", "tracking_number"):
            if getattr(body, field) is not None:
                raise ValidationFailed(f"{field} is only accepted with status shipped.", field=field)
    if target == OrderStatus.processing:
        return await confirm(session, principal, order_id, note=body.note)
    if target == OrderStatus.shipped:
        return await ship(
            session, principal, order_id, carrier=body.carrier, tracking_number=body.tracking_number, note=body.note
        )
    if target == OrderStatus.delivered:
        return await deliver(session, principal, order_id, note=body.note)
    if target == OrderStatus.returned:
        return await mark_returned(session, principal, order_id, note=body.note)
    if target == OrderStatus.cancelled:
        return await cancel(session, principal, order_id, note=body.note)
    order = await _locked(session, principal, order_id)
    raise InvalidTransition(f"Order {order.number} is {order.status}; no order moves back to pending.")


# --- following an order (its customer, a guest with the order token, staff) -----------------------------------


async def tracking(
    session: AsyncSession, principal: Principal | None, order_id: uuid.UUID, *, order_token: str | None
) -> OrderTrackingRead:
    """Where the order is: status, carrier, tracking number, estimated delivery (the expected delivery date) and
    every status it reached, oldest first, with the note staff left on that step. For the order's customer (or a
    guest with its token) and admins (API.md "C (own), A").

    Raises:
        OrderNotFound: no such order, or not the caller's.
        Forbidden: sales staff, for an order that is not their own.
    """
    order = await service.get_order(session, principal, order_id, order_token=order_token, customer_or_admin=True)
    steps: list[TrackingEventRead] = []
    for event in await repository.events(session, order.id):
        if steps and steps[-1].status == event.status:
            continue  # a change within the same status (notes, address, a failed payment) is not a step
        note = event.data.get("note")
        steps.append(TrackingEventRead(status=OrderStatus(event.status), at=event.created_at, note=note))
    return OrderTrackingRead(
        order_id=order.id,
        status=OrderStatus(order.status),
        carrier=order.carrier,
        tracking_number=order.tracking_number,
        estimated_delivery=order.expected_delivery_date,
        events=steps,
    )


async def shipping(
    session: AsyncSession, principal: Principal | None, order_id: uuid.UUID, *, order_token: str | None
) -> Order:
    """The order whose shipping details the caller asks for: its customer (or a guest with its token) or an admin
    (API.md "C (own), A").

    Raises:
        OrderNotFound: no such order, or not the caller's.
        Forbidden: sales staff, for an order that is not their own.
    """
    return await service.get_order(session, principal, order_id, order_token=order_token, customer_or_admin=True)


async def change_shipping_address(
    session: AsyncSession,
    principal: Principal | None,
    order_id: uuid.UUID,
    address: AddressCreate | None,
    *,
    order_token: str | None,
) -> Order:
    """Send the order elsewhere while it is pending or processing (its customer, a guest with the order token, or
    an admin). Appends ``order.updated`` with the new address (nothing when it is unchanged or left out).

    The address is checked as at placement (``POST /orders``), by the same functions: the postal code must fit
    the country, and when the country changes the order's shipping method must ship there
    (:func:`mercato.shipping.service.quote` with the order's method). API.md keeps the shipping method and the
    totals as placed, so a destination that would change them is refused with 422, not recomputed: when the
    country or region changes, the tax the pricing function gives at the new destination's rate (the current
    ``/admin/tax-rates``) must equal the order's ``tax_total``. Shipping costs do not depend on the destination
    (same method, same parcel). A change within the same country and region is never refused for tax, even if
    the rate table changed since placement; an order placed without a shipping method has no method to check.

    Raises:
        OrderNotFound: no such order, or not the caller's.
        InvalidTransition: the order is shipped, delivered, returned or cancelled.
        ValidationFailed: the postal code does not fit the country (``shipping_address.postal_code``); the order's
            method does not ship to the new country or is no longer offered (``shipping_address.country``); the
            new destination would be taxed differently (``shipping_address.country``, or ``.region`` when only
            the region changes).
    """
    order = await service.get_order(session, principal, order_id, order_token=order_token, lock=True)
    if order.status not in ADDRESS_CHANGEABLE:
        raise InvalidTransition(f"Order {order.number} is {order.status}; its shipping address can no longer change.")
    if address is None:
        return order
    checked = users_service.checked_address(address)
    if checked != order.shipping_address:
        await _check_destination(session, order, checked)
        order.shipping_address = checked
        actor = principal.user_id if principal is not None else None
        await events.record(session, order, "order.updated", {"shipping_address": checked}, actor)
    return order


# --- helpers --------------------------------------------------------------------------------------------------


async def _check_destination(session: AsyncSession, order: Order, address: dict[str, Any]) -> None:
    """Refuse a new shipping address that the order's method does not serve or that would change its totals
    (see :func:`change_shipping_address`). Raises :class:`ValidationFailed`."""
    before = order.shipping_address or {}
    country = str(address["country"]).upper()
    new_country = country != str(before.get("country") or "").upper()
    field = "country" if new_country else "region"
    if new_country and order.shipping_method is not None:
        try:
            await shipping_service.quote(
                session,
                country=country,
                units=_units(order),
                method_id=uuid.UUID(str(order.shipping_method["id"])),
                subtotal=order.subtotal - order.discount_total,
            )
        except ValidationFailed as exc:
            raise ValidationFailed(exc.detail, loc=["body", "shipping_address", "country"]) from exc
    if not new_country and _region(address) == _region(before):
        return
    rate = await shipping_service.tax_rate(session, country, address.get("region"))
    tax = pricing.price(
        [pricing.Line("order", order.subtotal, 1)],
        discount=pricing.Discount("fixed", order.discount_total),
        shipping=pricing.Shipping(order.shipping_total),
        tax_rate=rate,
    ).tax_total
    if tax != order.tax_total:
        raise ValidationFailed(
            f"Shipping order {order.number} there would change its tax from {order.tax_total} to {tax} "
            f"{order.currency}; the totals stay as placed (cancel the order and order again to ship there).",
            loc=["body", "shipping_address", field],
        )


def _region(address: dict[str, Any]) -> str | None:
    """The region as the tax table compares it (trimmed, case-folded; blank = none)."""
    region = str(address.get("region") or "").strip().casefold()
    return region or None


async def _locked(session: AsyncSession, principal: Principal, order_id: uuid.UUID) -> Order:
    return await service.get_order(session, principal, order_id, lock=True)


def _check(order: Order, target: OrderStatus) -> None:
    if not rules.can_move(order.status, target):
        raise InvalidTransition(f"Order {order.number} is {order.status}; it cannot move to {target}.")
    if target == OrderStatus.shipped and order.payment_status == PaymentStatus.refunded:
        # the customer has all the money back: sending the goods too would give them away; cancel it instead
        raise InvalidTransition(f"Order {order.number} is fully refunded; it cannot be shipped (cancel it instead).")


def _units(order: Order) -> list[tuple[uuid.UUID, uuid.UUID | None, int]]:
    return [(item.product_id, item.variant_id, item.quantity) for item in order.items]


def _method_carrier(order: Order) -> str | None:
    carrier = (order.shipping_method or {}).get("carrier")
    return str(carrier) if carrier else None


def _data(changed: dict[str, Any], note: str | None) -> dict[str, Any]:
    return (changed | {"note": note}) if note is not None else changed
