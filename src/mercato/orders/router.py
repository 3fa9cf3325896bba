"""``/api/v1/orders`` (customers and guests) and ``/api/v1/admin/orders`` (staff) — API.md "Orders".

Guests read and cancel their order with the ``X-Order-Token`` header they got when placing it.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status

from mercato.cart.deps import CartOwnerDep
from mercato.catalog.errors import ProductNotFound
from mercato.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from mercato.identity.models import Role
from mercato.identity.principal import Principal
from mercato.inventory.errors import InsufficientStock
from mercato.orders import service
from mercato.orders.errors import InvalidTransition, OrderNotFound
from mercato.orders.models import Channel, OrderStatus
from mercato.orders.repository import OrderFilter
from mercato.orders.schemas import (
    ChannelOrderCreate,
    OrderCreate,
    OrderEventRead,
    OrderPlaced,
    OrderRead,
    OrderUpdate,
)
from mercato.promotions.errors import CouponInvalid
from mercato.schemas import Instant
from mercato.web import idempotency
from mercato.web.deps import CurrentUser, OptionalPrincipal, ReadSessionDep, SessionDep, require
from mercato.web.idempotency import IdempotencyDep
from mercato.web.pagination import Page, PageDep, page_of
from mercato.web.problems import problems

router = APIRouter(prefix="/orders", tags=["orders"])
admin_router = APIRouter(prefix="/admin/orders", tags=["orders"])
Staff = Annotated[Principal, Depends(require(Role.sales))]
OrderToken = Annotated[
    str | None,
    Header(
        alias="X-Order-Token",
        max_length=200,
        description="A guest's order token (returned once by `POST /orders`).",
    ),
]
StatusQuery = Annotated[OrderStatus | None, Query(description="Only orders in this status")]
FromQuery = Annotated[
    Instant | None, Query(alias="from", description="Placed at or after (RFC 3339, timezone required)")
]
ToQuery = Annotated[Instant | None, Query(alias="to", description="Placed at or before (RFC 3339, timezone required)")]
NOT_FOUND = problems(OrderNotFound)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderPlaced,
    summary="Place an order from the cart",
    description=(
        "Turns the caller's cart (signed in, or the guest cart of the `mercato_cart` cookie) into a pending order "
        "in one transaction: price snapshots, coupon use counted, stock reserved for `MERCATO_RESERVATION_TTL`, "
        "cart emptied, `order.placed` event, confirmation email. Shipping: `shipping_method_id`, or else the "
        "cheapest method shipping to the address's country (422 when methods exist but none ships there; none "
        "configured: no shipping charged); tax from the admin tax-rate table for the destination. Guests must give "
        "`email` and get `order_token` once. Send an `Idempotency-Key` to make retries safe."
    ),
    responses=problems(ValidationFailed, ProductNotFound, InsufficientStock, CouponInvalid) | idempotency.RESPONSES,
)
async def place_order(
    body: OrderCreate,
    session: SessionDep,
    principal: OptionalPrincipal,
    owner: CartOwnerDep,
    idem: IdempotencyDep,
) -> Response:
    async def run() -> OrderPlaced:
        order, token = await service.place_order(session, principal, owner, body)
        placed = OrderPlaced.model_validate(order)
        placed.order_token = token
        return placed

    return await idem.run(session, run, status_code=status.HTTP_201_CREATED, model=OrderPlaced)


@router.get(
    "",
    response_model=Page[OrderRead],
    summary="List your orders",
    description="The signed-in customer's own orders, newest first.",
    responses=problems(Unauthorized),
)
async def list_orders(
    request: Request,
    response: Response,
    session: ReadSessionDep,
    principal: CurrentUser,
    paging: PageDep,
    status_: Annotated[OrderStatus | None, Query(alias="status", description="Only orders in this status")] = None,
    created_from: FromQuery = None,
    created_to: ToQuery = None,
) -> Page[OrderRead]:
    filters = OrderFilter(user_id=principal.user_id, status=status_, created_from=created_from, created_to=created_to)
    paged = await service.list_orders(session, filters, page=paging.page, limit=paging.limit)
    return page_of(OrderRead, request, response, paged)


@router.get(
    "/{order_id}",
    response_model=OrderRead,
    summary="Get an order",
    description=(
        "The caller's order (staff: any order; guests: with `X-Order-Token`). With `as_of`, the order as it stood "
        "at that instant, rebuilt from its events (events at that very instant included)."
    ),
    responses=NOT_FOUND,
)
async def get_order(
    order_id: uuid.UUID,
    session: ReadSessionDep,
    principal: OptionalPrincipal,
    order_token: OrderToken = None,
    as_of: Annotated[Instant | None, Query(description="RFC 3339 instant; timezone required")] = None,
) -> OrderRead:
    if as_of is not None:
        return await service.order_as_of(session, principal, order_id, as_of, order_token=order_token)
    return OrderRead.model_validate(await service.get_order(session, principal, order_id, order_token=order_token))


@router.get(
    "/{order_id}/events",
    response_model=Page[OrderEventRead],
    summary="An order's history",
    description="Append-only events, oldest first; `status` is the order's status after each event.",
    responses=NOT_FOUND,
)
async def order_events(
    order_id: uuid.UUID,
    request: Request,
    response: Response,
    session: ReadSessionDep,
    principal: OptionalPrincipal,
    paging: PageDep,
    order_token: OrderToken = None,
) -> Page[OrderEventRead]:
    paged = await service.order_events(
        session, principal, order_id, order_token=order_token, page=paging.page, limit=paging.limit
    )
    return page_of(OrderEventRead, request, response, paged)


@router.patch(
    "/{order_id}",
    response_model=OrderRead,
    summary="Change an order's notes",
    description=(
        "Customers while the order is pending (else 409 `invalid-transition`); admins at any time; sales staff get 403."
    ),
    responses=NOT_FOUND | problems(InvalidTransition, Forbidden),
)
@router.put("/{order_id}", response_model=OrderRead, include_in_schema=False)
async def update_order(
    order_id: uuid.UUID,
    body: OrderUpdate,
    session: SessionDep,
    principal: OptionalPrincipal,
    order_token: OrderToken = None,
) -> OrderRead:
    order = await service.update_notes(session, principal, order_id, body.notes, order_token=order_token)
    return OrderRead.model_validate(order)


@router.delete(
    "/{order_id}",
    response_model=OrderRead,
    summary="Cancel an order",
    description=(
        "Allowed while `pending` or `processing`: reserved stock is released (committed stock returns to on hand), "
        "the coupon use is given back, `order.cancelled` is appended, and a captured payment is refunded in full "
        "right after. 200 with the cancelled order."
    ),
    responses=NOT_FOUND | problems(InvalidTransition, Forbidden),
)
async def cancel_order(
    order_id: uuid.UUID,
    session: SessionDep,
    principal: OptionalPrincipal,
    order_token: OrderToken = None,
) -> OrderRead:
    reason = "staff" if service.is_staff(principal) else "customer"
    order = await service.cancel_order(session, principal, order_id, order_token=order_token, reason=reason)
    return OrderRead.model_validate(order)


@admin_router.get(
    "",
    response_model=Page[OrderRead],
    summary="All orders (staff)",
    description="Every order, newest first; `q` matches the number, customer email or name.",
    responses=problems(Unauthorized, Forbidden),
)
async def admin_list_orders(
    request: Request,
    response: Response,
    session: ReadSessionDep,
    _: Staff,
    paging: PageDep,
    status_: Annotated[OrderStatus | None, Query(alias="status", description="Only orders in this status")] = None,
    user_id: uuid.UUID | None = None,
    channel: Channel | None = None,
    created_from: FromQuery = None,
    created_to: ToQuery = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> Page[OrderRead]:
    filters = OrderFilter(
        user_id=user_id, status=status_, channel=channel, created_from=created_from, created_to=created_to, q=q
    )
    paged = await service.list_orders(session, filters, page=paging.page, limit=paging.limit)
    return page_of(OrderRead, request, response, paged)


@admin_router.get(
    "/priority",
    response_model=Page[OrderRead],
    summary="Open orders by expected delivery date (staff)",
    description="Source 002: pending and processing orders, soonest `expected_delivery_date` first, then priority.",
    responses=problems(Unauthorized, Forbidden),
)
async def priority_orders(
    request: Request, response: Response, session: ReadSessionDep, _: Staff, paging: PageDep
) -> Page[OrderRead]:
    paged = await service.priority_orders(session, page=paging.page, limit=paging.limit)
    return page_of(OrderRead, request, response, paged)


@admin_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderRead,
    summary="Enter an order taken on another channel (staff)",
    description=(
        "Source 002: orders taken on Instagram, Facebook, WhatsApp, by phone or in person, for a customer with or "
        "without an account. Stock is reserved; the reservation does not expire, whatever the channel."
    ),
    responses=problems(Unauthorized, Forbidden, ValidationFailed, NotFound, InsufficientStock),
)
async def create_channel_order(body: ChannelOrderCreate, session: SessionDep, principal: Staff) -> OrderRead:
    return OrderRead.model_validate(await service.create_channel_order(session, principal, body))
