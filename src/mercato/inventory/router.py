"""``/api/v1/inventory``: stock levels, setting and adjusting on-hand counts (one at a time or in an
all-or-nothing batch), the low-stock list and the history of every change (API.md "Inventory").

Who: admins; procurement; vendors for their own products on ``GET /inventory``, ``PUT /inventory/{product_id}``
and ``POST /inventory/adjust`` (another vendor's product is a 404). Everyone else gets 403.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from mercato.catalog.errors import ProductNotFound
from mercato.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from mercato.identity.models import Role
from mercato.identity.principal import Principal
from mercato.inventory import repository
from mercato.inventory import service as inventory_service
from mercato.inventory.errors import BatchFailed, InsufficientStock
from mercato.inventory.schemas import BatchResult, HistoryRead, InventoryRead, StockAdjust, StockBatch, StockSet
from mercato.web.deps import SessionDep, require
from mercato.web.pagination import Page, PageDep, page_of
from mercato.web.problems import problems

router = APIRouter(prefix="/inventory", tags=["inventory"])
#: Admins, procurement and vendors (vendors: own products only, checked by the service).
StockKeeper = Annotated[Principal, Depends(require(Role.procurement, Role.vendor))]
#: Admins and procurement.
Procurement = Annotated[Principal, Depends(require(Role.procurement))]
SKU_QUERY = Query(min_length=1, max_length=64, description="Exact internal SKU")


@router.get(
    "",
    response_model=Page[InventoryRead],
    responses=problems(Unauthorized, Forbidden),
    summary="List stock levels",
)
async def list_stock(
    request: Request,
    response: Response,
    session: SessionDep,
    principal: StockKeeper,
    paging: PageDep,
    product_id: uuid.UUID | None = None,
    variant_id: uuid.UUID | None = None,
    sku: Annotated[str | None, SKU_QUERY] = None,
    low_stock: Annotated[
        bool | None, Query(description="Only units at or below (or above) their reorder point")
    ] = None,
) -> Page[InventoryRead]:
    """One row per product without variants and one per variant, ordered by product name: `on_hand`, `reserved`,
    `available = on_hand − reserved`, `reorder_point`, `low_stock` (`available ≤ reorder_point`: with the default
    reorder point 0, a sold-out unit). Vendors see their own products only."""
    filters = repository.ItemFilter(product_id=product_id, variant_id=variant_id, sku=sku, low_stock=low_stock)
    found = await inventory_service.list_units(session, principal, filters, page=paging.page, limit=paging.limit)
    return page_of(InventoryRead, request, response, found)


@router.get(
    "/low-stock",
    response_model=Page[InventoryRead],
    responses=problems(Unauthorized, Forbidden),
    summary="List units at or below their reorder point",
)
async def low_stock(
    request: Request, response: Response, session: SessionDep, principal: Procurement, paging: PageDep
) -> Page[InventoryRead]:
    """Units whose `available` units are at or below their `reorder_point`, sold-out units with the default
    reorder point 0 included (admins, procurement)."""
    filters = repository.ItemFilter(low_stock=True)
    found = await inventory_service.list_units(session, principal, filters, page=paging.page, limit=paging.limit)
    return page_of(InventoryRead, request, response, found)


@router.get(
    "/history",
    response_model=Page[HistoryRead],
    responses=problems(Unauthorized, Forbidden),
    summary="List stock changes",
)
async def stock_history(
    request: Request,
    response: Response,
    session: SessionDep,
    _: Procurement,
    paging: PageDep,
    product_id: uuid.UUID | None = None,
    variant_id: uuid.UUID | None = None,
    reference: Annotated[str | None, Query(min_length=1, max_length=100, description="e.g. an order number")] = None,
) -> Page[HistoryRead]:
    """Every stock change, newest first: adjustments, counts set by staff or the catalog, and the order flow's
    reservations (`order.placed`), releases, sales and restocks (admins, procurement)."""
    found = await inventory_service.history(
        session,
        product_id=product_id,
        variant_id=variant_id,
        reference=reference,
        page=paging.page,
        limit=paging.limit,
    )
    return page_of(HistoryRead, request, response, found)


@router.put(
    "/{product_id}",
    response_model=InventoryRead,
    responses=problems(Unauthorized, Forbidden, ProductNotFound, InsufficientStock, ValidationFailed),
    summary="Set a unit's on-hand count",
)
async def set_stock(
    product_id: uuid.UUID, body: StockSet, session: SessionDep, principal: StockKeeper
) -> InventoryRead:
    """Set `on_hand` (and optionally `reorder_point`) of a product without variants, or of the variant
    `variant_id` (required for a product with variants, 422 otherwise). Below the reserved units → 409
    `insufficient-stock`. A changed count is recorded in the history with `reason`."""
    return await inventory_service.set_unit(
        session,
        principal,
        product_id,
        variant_id=body.variant_id,
        on_hand=body.on_hand,
        reorder_point=body.reorder_point,
        reason=body.reason,
    )


@router.post(
    "/adjust",
    response_model=InventoryRead,
    responses=problems(Unauthorized, Forbidden, ProductNotFound, NotFound, InsufficientStock, Conflict),
    summary="Adjust a unit's on-hand count",
)
async def adjust_stock(body: StockAdjust, session: SessionDep, principal: StockKeeper) -> InventoryRead:
    """Add `delta` units on hand (negative removes; 0 → 422). A result below zero or below the reserved units →
    409 `insufficient-stock` naming the unit and its `available` units, and nothing changes."""
    return await inventory_service.adjust_unit(session, principal, body)


@router.post(
    "/batch",
    response_model=BatchResult,
    responses=problems(Unauthorized, Forbidden, BatchFailed),
    summary="Apply many adjustments, all or nothing",
)
async def batch_adjust(body: StockBatch, session: SessionDep, principal: Procurement) -> BatchResult:
    """Apply 1–500 adjustments (admins, procurement): each unit's in request order, the units one after another
    in id order (so concurrent batches cannot deadlock). If any fails, nothing is changed and the 422 lists every
    failure by `index` (`{index, status, type, detail}`, as `POST /products/bulk` does). On success, every history
    row carries the returned `reference`; `results` follow the request order."""
    reference, results = await inventory_service.adjust_batch(session, principal, body.adjustments)
    return BatchResult(reference=reference, results=results)
