"""``/api/v1/shipping``: shipping methods (public list; admin create, update, delete), shipping quotes; and
``/api/v1/admin/tax-rates``, the tax-rate table (API.md "Shipping", "Cart" → Pricing)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response, status

from mercato.cart import service as cart_service
from mercato.cart.deps import CartOwnerDep
from mercato.catalog.errors import ProductNotFound
from mercato.db.queries import Paged
from mercato.errors import Forbidden, Unauthorized, ValidationFailed
from mercato.shipping import service
from mercato.shipping.errors import ShippingMethodNotFound
from mercato.shipping.schemas import (
    DeliveryEstimate,
    ShippingCalculate,
    ShippingMethodCreate,
    ShippingMethodRead,
    ShippingMethodUpdate,
    ShippingQuote,
    TaxRateRead,
    TaxRateTable,
    TaxRateTableRead,
)
from mercato.web.deps import Admin, OptionalPrincipal, ReadSessionDep, ServicesDep, SessionDep
from mercato.web.pagination import Page, PageDep, page_of
from mercato.web.problems import problems

router = APIRouter(tags=["shipping"])
ADMIN_ONLY = problems(Unauthorized, Forbidden)


@router.get("/shipping/methods", response_model=Page[ShippingMethodRead], summary="List shipping methods")
async def list_methods(
    request: Request,
    response: Response,
    session: ReadSessionDep,
    services: ServicesDep,
    principal: OptionalPrincipal,
    paging: PageDep,
) -> Page[ShippingMethodRead]:
    """Everyone: the active methods, by name. Admins also see inactive ones (`is_active` false). `countries`
    empty means worldwide; a method costs `base_rate + per_kg_rate × weight in kg` and nothing when the subtotal
    after discount reaches `free_over`."""
    admin = principal is not None and principal.is_admin
    found = await service.list_methods(session, include_inactive=admin, page=paging.page, limit=paging.limit)
    currency = services.settings.currency
    shaped: Paged[object] = Paged(
        [ShippingMethodRead.of(method, currency) for method in found.items], found.total, found.page, found.limit
    )
    return page_of(ShippingMethodRead, request, response, shaped)


@router.post(
    "/shipping/methods",
    status_code=status.HTTP_201_CREATED,
    response_model=ShippingMethodRead,
    responses={**ADMIN_ONLY, **problems(ValidationFailed)},
    summary="Create a shipping method",
)
async def create_method(
    body: ShippingMethodCreate, session: SessionDep, services: ServicesDep, _: Admin
) -> ShippingMethodRead:
    """Admin. Amounts with at most two decimals; `min_days` ≤ `max_days` (business days); `countries` ISO 3166-1
    alpha-2 codes (empty = worldwide). The method is offered at once when `is_active` (the default)."""
    created = await service.create_method(session, body)
    return ShippingMethodRead.of(created, services.settings.currency)


@router.patch(
    "/shipping/methods/{method_id}",
    response_model=ShippingMethodRead,
    responses={**ADMIN_ONLY, **problems(ShippingMethodNotFound, ValidationFailed)},
    summary="Update a shipping method",
)
@router.put("/shipping/methods/{method_id}", response_model=ShippingMethodRead, include_in_schema=False)
async def update_method(
    method_id: uuid.UUID, body: ShippingMethodUpdate, session: SessionDep, services: ServicesDep, _: Admin
) -> ShippingMethodRead:
    """Admin. Partial update (`PUT` is an alias): fields left out keep their value; only `free_over` may be set
    to null. Orders already placed keep the method as it was (their `shipping_method` snapshot)."""
    updated = await service.update_method(session, method_id, body)
    return ShippingMethodRead.of(updated, services.settings.currency)


@router.delete(
    "/shipping/methods/{method_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**ADMIN_ONLY, **problems(ShippingMethodNotFound)},
    summary="Delete a shipping method",
)
async def delete_method(method_id: uuid.UUID, session: SessionDep, _: Admin) -> None:
    """Admin. Deletes the method for good; orders placed with it keep their `shipping_method` snapshot. To stop
    offering a method for a while, set `is_active` to false instead. When no active method is left, orders are
    placed without shipping charges."""
    await service.delete_method(session, method_id)


@router.post(
    "/shipping/calculate",
    response_model=Page[ShippingQuote],
    responses=problems(ValidationFailed, ProductNotFound, Forbidden),
    summary="Quote shipping for a destination",
)
async def calculate(
    body: ShippingCalculate,
    request: Request,
    response: Response,
    session: ReadSessionDep,
    services: ServicesDep,
    owner: CartOwnerDep,
    paging: PageDep,
) -> Page[ShippingQuote]:
    """Public. What each active method that ships to `country` costs for `items` (when omitted, the caller's
    cart: the signed-in user's or the guest cart of the `mercato_cart` cookie; lines no longer for sale are left
    out; 422 naming `items` when that leaves nothing to ship), cheapest first, with its estimated delivery window
    (business days from today, weekends skipped). `cost` is `base_rate + per_kg_rate × weight in kg` (product
    weights; none = 0), rounded half-even to the cent, and `"0.00"` when the subtotal at current prices reaches the
    method's `free_over` (a coupon, applied at checkout, can bring the subtotal below it). An empty list: no
    method ships there — orders to that country are refused, unless the store has no shipping methods at all (then
    shipping is free). `method_id` limits the answer to that method (422 when it is unknown, inactive or does not
    ship to `country`). Nothing is created."""
    if body.items is not None:
        units = [(item.product_id, item.variant_id, item.quantity) for item in body.items]
    else:
        cart = await cart_service.read_cart(session, owner)
        units = [
            (line.product_id, line.variant_id, line.quantity) for line in cart.items if line.unit_price is not None
        ]
    options = await service.calculate(session, country=body.country, units=units, method_id=body.method_id)
    currency = services.settings.currency
    quotes = [
        ShippingQuote(
            method_id=option.method.id,
            name=option.method.name,
            carrier=option.method.carrier,
            cost=option.cost,
            currency=currency,
            estimated_delivery=DeliveryEstimate(min_date=option.delivery.min_date, max_date=option.delivery.max_date),
        )
        for option in options
    ]
    start = (paging.page - 1) * paging.limit
    shaped: Paged[object] = Paged(quotes[start : start + paging.limit], len(quotes), paging.page, paging.limit)
    return page_of(ShippingQuote, request, response, shaped)


@router.get(
    "/admin/tax-rates",
    response_model=Page[TaxRateRead],
    responses=ADMIN_ONLY,
    summary="List the tax-rate table",
    tags=["tax"],
)
async def list_tax_rates(
    request: Request, response: Response, session: ReadSessionDep, paging: PageDep, _: Admin
) -> Page[TaxRateRead]:
    """Admin. The tax rates by country, each country's own rate (`region` null) before its regions'. `rate` is a
    fraction (`"0.0825"` = 8.25 %). Tax = rate of the shipping address (its region's row, else its country's,
    else 0) × (subtotal − discount + shipping), rounded half-even to the cent."""
    found = await service.list_tax_rates(session, page=paging.page, limit=paging.limit)
    shaped: Paged[object] = Paged([TaxRateRead.of(row) for row in found.items], found.total, found.page, found.limit)
    return page_of(TaxRateRead, request, response, shaped)


@router.put(
    "/admin/tax-rates",
    response_model=TaxRateTableRead,
    responses={**ADMIN_ONLY, **problems(ValidationFailed)},
    summary="Replace the tax-rate table",
    tags=["tax"],
)
async def replace_tax_rates(body: TaxRateTable, session: SessionDep, _: Admin) -> TaxRateTableRead:
    """Admin. Replaces the whole table, all or nothing, and answers it: rows not listed are removed (`{"rates":
    []}` removes every rate). Each row is `{country, region?, rate}`: an ISO 3166-1 alpha-2 `country`; an optional
    `region` (state or province as written in addresses, compared case-insensitively); `rate` a fraction,
    0 ≤ rate < 1, at most six decimals (`0.0825` for 8.25 %, never `8.25`). A bad row or the same country and
    region twice → 422 naming the row. Placed orders keep the tax they were charged."""
    table = await service.replace_tax_rates(session, body.rates)
    return TaxRateTableRead(rates=[TaxRateRead.of(row) for row in table])
