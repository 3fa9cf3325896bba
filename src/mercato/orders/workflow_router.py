"""The order workflow over HTTP (API.md "Orders"): ``PUT /orders/{id}/status`` and the verbs ``POST
/orders/{id}/confirm``, ``/ship``, ``/cancel`` (admins); ``GET /orders/{id}/tracking`` and ``GET/PATCH
/orders/{id}/shipping`` (the order's customer, a guest with ``X-Order-Token``, staff)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from mercato.errors import Forbidden, Unauthorized, ValidationFailed
from mercato.orders import workflow
from mercato.orders.errors import InvalidTransition, OrderNotFound
from mercato.orders.models import Order
from mercato.orders.router import OrderToken
from mercato.orders.schemas import (
    OrderNote,
    OrderRead,
    OrderShip,
    OrderShippingRead,
    OrderShippingUpdate,
    OrderStatusChange,
    OrderTrackingRead,
)
from mercato.web.deps import Admin, OptionalPrincipal, ReadSessionDep, SessionDep
from mercato.web.problems import problems

router = APIRouter(prefix="/orders", tags=["orders"])
MOVE_PROBLEMS = problems(Unauthorized, Forbidden, OrderNotFound, InvalidTransition)
MOVES = (
    "Allowed moves: pending → processing → shipped → delivered → returned; pending/processing → cancelled; "
    "anything else is 409 `invalid-transition` and changes nothing."
)


@router.put(
    "/{order_id}/status",
    response_model=OrderRead,
    summary="Change an order's status (admin)",
    description=(
        f"{MOVES} `processing` confirms an unpaid order (stock committed, the reservation no longer expires, "
        "`payment_status` unchanged); `shipped` stores `carrier` (default: the shipping method's carrier) and "
        "`tracking_number`, which are refused (422) with any other status; `cancelled` releases or restocks the "
        "units and refunds a captured payment. Each change appends its event (`order.confirmed`, `order.shipped`, "
        "`order.delivered`, `order.returned`, `order.cancelled`, with `note` when given) and emails the customer."
    ),
    responses=MOVE_PROBLEMS | problems(ValidationFailed),
)
async def change_status(body: OrderStatusChange, order_id: uuid.UUID, session: SessionDep, admin: Admin) -> OrderRead:
    return OrderRead.model_validate(await workflow.change_status(session, admin, order_id, body))


@router.post(
    "/{order_id}/confirm",
    response_model=OrderRead,
    summary="Confirm an order (admin)",
    description=(
        "`pending → processing` without a payment (e.g. cash on delivery): the reserved stock is committed "
        "(on hand and reserved both drop), the reservation no longer expires, `payment_status` stays as it is. "
        "Appends `order.confirmed` and emails the customer. The body is optional."
    ),
    responses=MOVE_PROBLEMS,
)
async def confirm_order(
    order_id: uuid.UUID, session: SessionDep, admin: Admin, body: OrderNote | None = None
) -> OrderRead:
    note = body.note if body is not None else None
    return OrderRead.model_validate(await workflow.confirm(session, admin, order_id, note=note))


@router.post(
    "/{order_id}/ship",
    response_model=OrderRead,
    summary="Ship an order (admin)",
    description=(
        "`processing → shipped`: stores `carrier` (default: the shipping method's carrier) and `tracking_number`, "
        "appends `order.shipped` and emails the customer the tracking details. The body is optional."
    ),
    responses=MOVE_PROBLEMS,
)
async def ship_order(
    order_id: uuid.UUID, session: SessionDep, admin: Admin, body: OrderShip | None = None
) -> OrderRead:
    body = body or OrderShip()
    order = await workflow.ship(
        session, admin, order_id, carrier=body.carrier, tracking_number=body.tracking_number, note=body.note
    )
    return OrderRead.model_validate(order)


@router.post(
    "/{order_id}/cancel",
    response_model=OrderRead,
    summary="Cancel an order (admin)",
    description=(
        "Allowed while `pending` or `processing` (reason `staff`): reserved stock is released, committed stock "
        "returns to on hand, the coupon use is given back, a captured payment is refunded. Appends "
        "`order.cancelled` (with `note` when given) and emails the customer. The body is optional."
    ),
    responses=MOVE_PROBLEMS,
)
async def cancel_order(
    order_id: uuid.UUID, session: SessionDep, admin: Admin, body: OrderNote | None = None
) -> OrderRead:
    note = body.note if body is not None else None
    return OrderRead.model_validate(await workflow.cancel(session, admin, order_id, note=note))


@router.get(
    "/{order_id}/tracking",
    response_model=OrderTrackingRead,
    summary="Track an order",
    description=(
        "The order's status, carrier, tracking number and estimated delivery, and each status it reached with "
        "when and the shop's note. For the order's customer, a guest with `X-Order-Token`, and admins; sales "
        "staff get 403, anyone else 404."
    ),
    responses=problems(OrderNotFound, Forbidden),
)
async def track_order(
    order_id: uuid.UUID, session: ReadSessionDep, principal: OptionalPrincipal, order_token: OrderToken = None
) -> OrderTrackingRead:
    return await workflow.tracking(session, principal, order_id, order_token=order_token)


@router.get(
    "/{order_id}/shipping",
    response_model=OrderShippingRead,
    summary="An order's shipping details",
    description=(
        "Address, shipping method (as chosen at placement), carrier, tracking number and expected delivery date. "
        "For the order's customer, a guest with `X-Order-Token`, and admins; sales staff get 403, anyone else 404."
    ),
    responses=problems(OrderNotFound, Forbidden),
)
async def get_shipping(
    order_id: uuid.UUID, session: ReadSessionDep, principal: OptionalPrincipal, order_token: OrderToken = None
) -> OrderShippingRead:
    return _shipping(await workflow.shipping(session, principal, order_id, order_token=order_token))


@router.patch(
    "/{order_id}/shipping",
    response_model=OrderShippingRead,
    summary="Change an order's shipping address",
    description=(
        "While the order is `pending` or `processing` (then 409 `invalid-transition`): the address is checked as "
        "at placement (422 for a postal code that does not fit the country, or a new country the order's shipping "
        "method does not ship to); the shipping method and the totals stay as placed, so a destination taxed at "
        "another rate is refused with 422 (`shipping_address.country`, or `.region`) rather than recomputed. "
        "Appends `order.updated`. For the order's customer, a guest with `X-Order-Token`, and admins "
        "(sales staff get 403)."
    ),
    responses=problems(OrderNotFound, InvalidTransition, ValidationFailed, Forbidden),
)
@router.put("/{order_id}/shipping", response_model=OrderShippingRead, include_in_schema=False)
async def update_shipping(
    order_id: uuid.UUID,
    body: OrderShippingUpdate,
    session: SessionDep,
    principal: OptionalPrincipal,
    order_token: OrderToken = None,
) -> OrderShippingRead:
    order = await workflow.change_shipping_address(
        session, principal, order_id, body.shipping_address, order_token=order_token
    )
    return _shipping(order)


def _shipping(order: Order) -> OrderShippingRead:
    return OrderShippingRead(
        address=order.shipping_address,
        method=order.shipping_method,
        carrier=order.carrier,
        tracking_number=order.tracking_number,
        expected_delivery_date=order.expected_delivery_date,
    )
