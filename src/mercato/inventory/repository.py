"""Every inventory query: stock rows, the conditional ``UPDATE``s that move stock, history rows, and the staff
listings (which join the catalog's product and variant tables for names and the vendor)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Row,
    Select,
    and_,
    bindparam,
    case,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.dml import ReturningUpdate

from mercato.catalog.models import Product, ProductVariant
from mercato.db.queries import Paged
from mercato.inventory.models import InventoryHistory, InventoryItem
from mercato.platform import clock

#: The highest on-hand count a change may leave (well inside a 32-bit ``INTEGER`` column).
MAX_ON_HAND = 1_000_000_000


@dataclass(frozen=True)
class Counts:
    """A unit's counts read back right after a change (``RETURNING``)."""

    id: uuid.UUID
    sku: str | None
    on_hand: int
    reserved: int
    reorder_point: int


@dataclass(frozen=True)
class ItemFilter:
    """Filters of ``GET /inventory``: ``vendor_id`` restricts to one vendor's products (vendors see their own)."""

    product_id: uuid.UUID | None = None
    variant_id: uuid.UUID | None = None
    sku: str | None = None
    low_stock: bool | None = None
    vendor_id: uuid.UUID | None = None


#: Built once: a statement object that is reused skips SQLAlchemy's construction and cache-key work per call.
_LEVELS_OF_PRODUCTS = select(
    InventoryItem.product_id, InventoryItem.variant_id, InventoryItem.on_hand, InventoryItem.reserved,
    InventoryItem.reorder_point,
).where(InventoryItem.product_id.in_(bindparam("product_ids", expanding=True)))  # fmt: skip


async def levels_of_products(
    session: AsyncSession, product_ids: Iterable[uuid.UUID]
) -> Sequence[Row[uuid.UUID, uuid.UUID | None, int, int, int]]:
    """Every stock row of the given products (their own rows and their variants') as plain rows
    ``(product_id, variant_id, on_hand, reserved, reorder_point)`` (one query, no ORM objects)."""
    ids = list(product_ids)
    if not ids:
        return []
    return (await session.execute(_LEVELS_OF_PRODUCTS, {"product_ids": ids})).all()


def _unit(product_id: uuid.UUID, variant_id: uuid.UUID | None) -> ColumnElement[bool]:
    return and_(
        InventoryItem.product_id == product_id,
        InventoryItem.variant_id.is_(None) if variant_id is None else InventoryItem.variant_id == variant_id,
    )


async def existing_variants(session: AsyncSession, variant_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Those of ``variant_ids`` that still exist (a variant may be deleted once no unfinished order has it)."""
    wanted = list(variant_ids)
    if not wanted:
        return set()
    return set(await session.scalars(select(ProductVariant.id).where(ProductVariant.id.in_(wanted))))


async def item(
    session: AsyncSession, product_id: uuid.UUID, variant_id: uuid.UUID | None, *, lock: bool = False
) -> InventoryItem | None:
    """The stock row of a product (``variant_id`` None) or of one of its variants; ``lock`` takes a row lock
    (``FOR UPDATE`` on PostgreSQL; SQLite's write transaction already excludes other writers)."""
    query = select(InventoryItem).where(_unit(product_id, variant_id))
    if lock:
        query = query.with_for_update()
    return (await session.execute(query.execution_options(populate_existing=True))).scalar_one_or_none()


_RETURNED = (
    InventoryItem.id,
    InventoryItem.sku,
    InventoryItem.on_hand,
    InventoryItem.reserved,
    InventoryItem.reorder_point,
)


_N: BindParameter[int] = bindparam("n", type_=Integer)
#: The stock moves: (condition, new values) with ``:n`` the units moved.
_MOVES: dict[str, tuple[ColumnElement[bool], dict[str, Any]]] = {
    "reserve": (InventoryItem.on_hand - InventoryItem.reserved >= _N, {"reserved": InventoryItem.reserved + _N}),
    "release": (InventoryItem.reserved >= _N, {"reserved": InventoryItem.reserved - _N}),
    "commit_sale": (
        InventoryItem.reserved >= _N,
        {"on_hand": InventoryItem.on_hand - _N, "reserved": InventoryItem.reserved - _N},
    ),
    "add_on_hand": (
        and_(InventoryItem.on_hand + _N >= InventoryItem.reserved, InventoryItem.on_hand + _N <= MAX_ON_HAND),
        {"on_hand": InventoryItem.on_hand + _N},
    ),
}


@cache
def _move_statement(kind: str, has_variant: bool) -> ReturningUpdate[uuid.UUID, str | None, int, int, int]:
    """The conditional ``UPDATE ... RETURNING`` of a move, built once (its values are bind parameters, named
    apart from the columns: an ``UPDATE`` reserves the column names for its own ``SET`` parameters)."""
    condition, values = _MOVES[kind]
    variant = (
        InventoryItem.variant_id == bindparam("of_variant", type_=InventoryItem.variant_id.type)
        if has_variant
        else InventoryItem.variant_id.is_(None)
    )
    return (
        update(InventoryItem)
        .where(InventoryItem.product_id == bindparam("of_product", type_=InventoryItem.product_id.type), variant)
        .where(condition)
        .values(**values, updated_at=bindparam("moved_at", type_=InventoryItem.updated_at.type))
        .returning(*_RETURNED)
    )


async def _move(
    session: AsyncSession, kind: str, product_id: uuid.UUID, variant_id: uuid.UUID | None, n: int
) -> Counts | None:
    query = _move_statement(kind, variant_id is not None)
    params = {"of_product": product_id, "of_variant": variant_id, "n": n, "moved_at": clock.now()}
    row = (await session.execute(query, params, execution_options={"synchronize_session": "fetch"})).one_or_none()
    return None if row is None else Counts(*row)


async def reserve(session: AsyncSession, product_id: uuid.UUID, variant_id: uuid.UUID | None, n: int) -> Counts | None:
    """``reserved += n`` if at least ``n`` units are available (one conditional ``UPDATE``); None otherwise."""
    return await _move(session, "reserve", product_id, variant_id, n)


async def release(session: AsyncSession, product_id: uuid.UUID, variant_id: uuid.UUID | None, n: int) -> Counts | None:
    """``reserved -= n`` if at least ``n`` units are reserved; None otherwise."""
    return await _move(session, "release", product_id, variant_id, n)


async def commit_sale(
    session: AsyncSession, product_id: uuid.UUID, variant_id: uuid.UUID | None, n: int
) -> Counts | None:
    """``on_hand -= n`` and ``reserved -= n`` together if at least ``n`` units are reserved; None otherwise."""
    return await _move(session, "commit_sale", product_id, variant_id, n)


async def add_on_hand(
    session: AsyncSession, product_id: uuid.UUID, variant_id: uuid.UUID | None, delta: int
) -> Counts | None:
    """``on_hand += delta`` if the result stays at or above the reserved units and at most :data:`MAX_ON_HAND`;
    None otherwise (or when the unit has no stock row)."""
    return await _move(session, "add_on_hand", product_id, variant_id, delta)


async def set_on_hand(session: AsyncSession, item_id: uuid.UUID, on_hand: int) -> bool:
    """Set ``on_hand`` unless that would leave fewer units than are reserved; True when it was set."""
    result = await session.execute(
        update(InventoryItem)
        .where(InventoryItem.id == item_id, InventoryItem.reserved <= on_hand)
        .values(on_hand=on_hand, updated_at=clock.now()),
        execution_options={"synchronize_session": "fetch"},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def add_history(session: AsyncSession, entry: InventoryHistory) -> None:
    """Append one history row to the session (flushed with the rest of the transaction)."""
    session.add(entry)


# --- staff listings -------------------------------------------------------------------------------------------


ListedRow = tuple[InventoryItem, str, str | None]


def _listing(filters: ItemFilter) -> Select[InventoryItem, str, str]:
    other = aliased(ProductVariant)
    has_variants = exists().where(other.product_id == InventoryItem.product_id)
    query = (
        select(InventoryItem, Product.name, ProductVariant.name)
        .join(Product, Product.id == InventoryItem.product_id)
        .outerjoin(ProductVariant, ProductVariant.id == InventoryItem.variant_id)
        .where(Product.deleted_at.is_(None))
        # one row per product without variants and one per variant (a product's own row is stale once it has some)
        .where(or_(InventoryItem.variant_id.is_not(None), ~has_variants))
    )
    if filters.product_id is not None:
        query = query.where(InventoryItem.product_id == filters.product_id)
    if filters.variant_id is not None:
        query = query.where(InventoryItem.variant_id == filters.variant_id)
    if filters.sku is not None:
        query = query.where(InventoryItem.sku == filters.sku)
    if filters.vendor_id is not None:
        query = query.where(Product.vendor_id == filters.vendor_id)
    low = InventoryItem.on_hand - InventoryItem.reserved <= InventoryItem.reorder_point  # service.is_low
    if filters.low_stock is True:
        query = query.where(low)
    elif filters.low_stock is False:
        query = query.where(~low)
    return query


async def list_items(session: AsyncSession, filters: ItemFilter, *, page: int, limit: int) -> Paged[ListedRow]:
    """A page of stock rows with their product name and variant name (None for a product's own row), ordered by
    product name, then variant position."""
    query = _listing(filters)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    ordered = query.order_by(Product.name, InventoryItem.product_id, ProductVariant.position, InventoryItem.variant_id)
    rows = (await session.execute(ordered.limit(limit).offset((page - 1) * limit))).all()
    return Paged([(row[0], row[1], row[2]) for row in rows], int(total or 0), page, limit)


async def list_history(
    session: AsyncSession,
    *,
    product_id: uuid.UUID | None,
    variant_id: uuid.UUID | None,
    reference: str | None,
    page: int,
    limit: int,
) -> Paged[InventoryHistory]:
    """A page of history rows, newest first, optionally for one product, variant or reference."""
    query = select(InventoryHistory)
    if product_id is not None:
        query = query.where(InventoryHistory.product_id == product_id)
    if variant_id is not None:
        query = query.where(InventoryHistory.variant_id == variant_id)
    if reference is not None:
        query = query.where(InventoryHistory.reference == reference)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    ordered = query.order_by(InventoryHistory.created_at.desc(), InventoryHistory.id.desc())
    items = (await session.execute(ordered.limit(limit).offset((page - 1) * limit))).scalars().all()
    return Paged(list(items), int(total or 0), page, limit)


#: Stock history reasons that count in ``units_sold_30d``: sales (negative on-hand deltas) and their returns.
SALE_REASONS = ("order.paid", "order.confirmed", "order.cancelled", "order.refunded")


async def recount_sold(session: AsyncSession, product_ids: Sequence[uuid.UUID], *, since: datetime) -> None:
    """``units_sold_30d`` := max(0, units sold since ``since`` less units returned since then), per product, from
    the stock history (one ``UPDATE``)."""
    if not product_ids:
        return
    net = (
        select(func.coalesce(-func.sum(InventoryHistory.delta), 0))
        .where(
            InventoryHistory.product_id == Product.id,
            InventoryHistory.reason.in_(SALE_REASONS),
            InventoryHistory.created_at >= since,
        )
        .scalar_subquery()
    )
    await session.execute(
        update(Product).where(Product.id.in_(product_ids)).values(units_sold_30d=case((net > 0, net), else_=0)),
        execution_options={"synchronize_session": False},
    )
