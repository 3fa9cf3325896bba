"""Inventory use cases (API.md "Inventory" and its stock rules): stock rows for new products and variants, setting
and adjusting on-hand counts, and the order flow's reservations (reserve, release, commit a sale, restock).

Every stock change goes through this module (ARCHITECTURE.md): it is one conditional ``UPDATE`` (never
read-then-write), appends one ``inventory_history`` row, makes cached catalog reads stale after commit (stock shows
on products), and enqueues the durable job ``inventory.low_stock`` when it takes a unit from above its reorder point
to at or below it. Functions take the caller's session and never commit: a raised error rolls the whole request
back, so a failed multi-unit change leaves nothing behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.catalog import cache as catalog_cache
from mercato.catalog import service as catalog_service
from mercato.db.queries import Paged
from mercato.errors import Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from mercato.identity.models import Role
from mercato.identity.principal import Principal
from mercato.inventory import repository
from mercato.inventory.errors import BatchFailed, InsufficientStock
from mercato.inventory.models import InventoryHistory, InventoryItem
from mercato.inventory.schemas import HistoryRead, InventoryRead, StockAdjust
from mercato.platform import clock, jobs, request_context

#: The durable job enqueued when a unit falls to or below its reorder point (see ``inventory/handlers.py``).
LOW_STOCK_JOB = "inventory.low_stock"
#: The durable job that recounts products' units sold once a sale leaves the 30-day window (payload
#: ``{"product_ids": ["<uuid>", ...]}``).
POPULARITY_JOB = "inventory.popularity"
#: How far back ``units_sold_30d`` (``sort=popularity``) counts (API.md "Catalog": units sold in the last 30 days).
POPULARITY_WINDOW = timedelta(days=30)
#: ``(product_id, variant_id, quantity)``: ``variant_id`` None for a product without variants; quantity > 0.
StockUnit = tuple[uuid.UUID, uuid.UUID | None, int]


@dataclass(frozen=True)
class Level:
    """Stock of one unit: ``on_hand``, ``reserved``, ``available = on_hand - reserved``, ``reorder_point``."""

    on_hand: int
    reserved: int
    reorder_point: int

    @property
    def available(self) -> int:
        """Units that can still be sold."""
        return self.on_hand - self.reserved

    @property
    def low(self) -> bool:
        """True when the unit needs reordering: ``available <= reorder_point`` (see :func:`is_low`)."""
        return is_low(self.available, self.reorder_point)


def is_low(available: int, reorder_point: int) -> bool:
    """The low-stock rule (API.md ``GET /inventory/low-stock``: "available ≤ reorder_point"): the available units
    (``on_hand - reserved``) have reached the reorder point. With a reorder point of 0 (the default) that is a
    unit that is sold out: staff need to see it too."""
    return available <= reorder_point


def crossed_low(before: Level | None, after: Level) -> bool:
    """True when a change makes a unit low that was not low before: the moment ``inventory.low_stock`` is
    enqueued, so staff are warned once per crossing, not on every sale. A new unit (``before`` None) counts as not
    low before when it starts with units on hand; one created with nothing on hand is not stocked yet, and is not
    warned about until it has been stocked and falls again (it is listed as low meanwhile)."""
    if before is None:
        return after.low and after.on_hand > 0
    return after.low and not before.low


# --- catalog-facing -------------------------------------------------------------------------------------------


def create_item(
    session: AsyncSession,
    *,
    product_id: uuid.UUID,
    variant_id: uuid.UUID | None,
    sku: str | None,
    on_hand: int,
    reorder_point: int = 0,
    reason: str = "initial stock",
    actor_id: uuid.UUID | None = None,
) -> InventoryItem:
    """Add the stock row of a new product (``variant_id`` None) or variant, with a history row when it starts
    with units on hand (``actor_id`` defaults to the request's user). Returns the (unflushed) row."""
    row = InventoryItem(
        id=clock.new_id(),
        product_id=product_id,
        variant_id=variant_id,
        sku=sku,
        on_hand=on_hand,
        reserved=0,
        reorder_point=reorder_point,
        updated_at=clock.now(),
    )
    session.add(row)
    after = Level(on_hand, 0, reorder_point)
    if on_hand:
        _history(session, product_id, variant_id, after, 0, on_hand, reason, None, _actor(actor_id))
    if crossed_low(None, after):
        _low_stock_job(session, product_id, variant_id, sku, after)
    catalog_cache.invalidate_after_commit(session)
    return row


async def set_stock(
    session: AsyncSession,
    *,
    product_id: uuid.UUID,
    variant_id: uuid.UUID | None,
    on_hand: int | None = None,
    reorder_point: int | None = None,
    sku: str | None = None,
    reason: str = "stock set",
    actor_id: uuid.UUID | None = None,
) -> Level:
    """Set the on-hand count (and reorder point, SKU) of a unit, creating its row if missing. A changed on-hand
    count writes a history row (``reason``; ``actor_id`` defaults to the request's user).

    The unit's row is locked first (``FOR UPDATE``; SQLite's write transaction excludes other writers), so the
    recorded ``delta`` is exact. Returns the unit's level afterwards.

    Raises:
        InsufficientStock: ``on_hand`` is below the units already reserved (nothing changed).
    """
    row = await repository.item(session, product_id, variant_id, lock=True)
    if row is None:
        created = create_item(
            session,
            product_id=product_id,
            variant_id=variant_id,
            sku=sku,
            on_hand=on_hand or 0,
            reorder_point=reorder_point or 0,
            reason=reason,
            actor_id=actor_id,
        )
        return Level(created.on_hand, 0, created.reorder_point)
    before = Level(row.on_hand, row.reserved, row.reorder_point)
    changes_on_hand = on_hand is not None and on_hand != before.on_hand
    if changes_on_hand and not await repository.set_on_hand(session, row.id, on_hand or 0):
        raise _insufficient(
            f"{before.reserved} units are reserved; on hand cannot go below that.",
            product_id,
            variant_id,
            before.available,
        )
    after = Level(
        before.on_hand if on_hand is None else on_hand,
        before.reserved,
        before.reorder_point if reorder_point is None else reorder_point,
    )
    if after.on_hand != before.on_hand:
        _history(
            session, product_id, variant_id, after, 0, after.on_hand - before.on_hand, reason, None, _actor(actor_id)
        )
    if reorder_point is not None:
        row.reorder_point = reorder_point
    if sku is not None:
        row.sku = sku
    row.updated_at = clock.now()
    if crossed_low(before, after):
        _low_stock_job(session, product_id, variant_id, row.sku, after)
    catalog_cache.invalidate_after_commit(session)
    return after


async def levels(
    session: AsyncSession, product_ids: Iterable[uuid.UUID]
) -> dict[tuple[uuid.UUID, uuid.UUID | None], Level]:
    """Stock levels keyed by ``(product_id, variant_id)`` for every unit of the given products (one query)."""
    return {
        (product_id, variant_id): Level(on_hand, reserved, reorder_point)
        for product_id, variant_id, on_hand, reserved, reorder_point in await repository.levels_of_products(
            session, product_ids
        )
    }


# --- the order flow -------------------------------------------------------------------------------------------


async def reserve(
    session: AsyncSession, units: Iterable[StockUnit], *, reference: str, actor_id: uuid.UUID | None = None
) -> None:
    """Reserve units for an order (API.md stock rules: placing an order reserves): ``reserved += n`` per unit,
    each one conditional ``UPDATE ... WHERE on_hand - reserved >= n``, in ``(product_id, variant_id)`` order so
    that concurrent orders never deadlock. Repeated units are summed. History reason ``order.placed``.

    Args:
        units: ``(product_id, variant_id, quantity)``; a unit without a stock row has 0 available.
        reference: what the reservation is for, e.g. the order number.
        actor_id: who placed the order (None: a guest or the system).

    Raises:
        InsufficientStock: a unit has fewer than ``n`` available; the body names it (``product_id``,
            ``variant_id``, ``available``). Units reserved before it stay reserved in the session until the
            caller's transaction rolls back, which the request (or ``db.session``) does on this error.
        ValidationFailed: a quantity is not positive.
    """
    for product_id, variant_id, n in _merged(units):
        counts = await repository.reserve(session, product_id, variant_id, n)
        if counts is None:
            available = await _available(session, product_id, variant_id)
            raise _insufficient(
                f"Only {available} unit(s) of {_name(product_id, variant_id)} available; {n} requested.",
                product_id,
                variant_id,
                available,
            )
        _moved(session, product_id, variant_id, counts, 0, n, "order.placed", reference, actor_id)


async def release(
    session: AsyncSession,
    units: Iterable[StockUnit],
    *,
    reference: str,
    reason: str,
    actor_id: uuid.UUID | None = None,
) -> None:
    """Give reserved units back (order cancelled, reservation expired): ``reserved -= n`` per unit, never below 0.

    Raises:
        Conflict: fewer than ``n`` units of a unit are reserved (the caller releases more than it reserved).
        ValidationFailed: a quantity is not positive.
    """
    for product_id, variant_id, n in _merged(units):
        counts = await repository.release(session, product_id, variant_id, n)
        if counts is None:
            raise Conflict(f"Cannot release {n} unit(s) of {_name(product_id, variant_id)}: fewer are reserved.")
        _moved(session, product_id, variant_id, counts, 0, -n, reason, reference, actor_id)


async def commit(
    session: AsyncSession,
    units: Iterable[StockUnit],
    *,
    reference: str,
    reason: str,
    actor_id: uuid.UUID | None = None,
) -> None:
    """Turn reservations into a sale (payment or staff confirmation): ``on_hand -= n`` and ``reserved -= n``
    together per unit, so ``available`` does not change.

    Raises:
        Conflict: fewer than ``n`` units of a unit are reserved.
        ValidationFailed: a quantity is not positive.
    """
    merged = _merged(units)
    for product_id, variant_id, n in merged:
        counts = await repository.commit_sale(session, product_id, variant_id, n)
        if counts is None:
            raise Conflict(f"Cannot sell {n} unit(s) of {_name(product_id, variant_id)}: fewer are reserved.")
        _moved(session, product_id, variant_id, counts, -n, -n, reason, reference, actor_id)
    await _recount_sold(session, merged)


async def restock(
    session: AsyncSession,
    units: Iterable[StockUnit],
    *,
    reference: str,
    reason: str,
    actor_id: uuid.UUID | None = None,
) -> None:
    """Put sold units back on hand (returns, refunds with restock, cancelling a paid order): ``on_hand += n``.
    A unit without a stock row gets one. Units of a variant deleted since the sale (allowed once its orders were
    delivered, cancelled or returned) have nowhere to go back to and are skipped.

    Raises:
        Conflict: the count would pass the ceiling of 1,000,000,000 units.
        ValidationFailed: a quantity is not positive.
    """
    merged = _merged(units)
    variant_ids = {variant_id for _, variant_id, _ in merged if variant_id is not None}
    gone = variant_ids - await repository.existing_variants(session, variant_ids)
    merged = [unit for unit in merged if unit[1] not in gone]
    for product_id, variant_id, n in merged:
        counts = await _add(session, product_id, variant_id, n)
        _moved(session, product_id, variant_id, counts, n, 0, reason, reference, actor_id)
    await _recount_sold(session, merged)


async def adjust(
    session: AsyncSession,
    *,
    product_id: uuid.UUID,
    variant_id: uuid.UUID | None,
    delta: int,
    reason: str,
    actor_id: uuid.UUID | None,
    reference: str | None = None,
) -> Level:
    """Move a unit's on-hand count by ``delta`` (a count correction, a delivery, damage...) with one conditional
    ``UPDATE``, and record it. Returns the unit's level afterwards.

    Raises:
        ValidationFailed: ``delta`` is 0 (field ``delta``).
        InsufficientStock: the result would be below zero or below the units already reserved (409; nothing
            changed; the body names the unit and its ``available`` units).
        Conflict: the count would pass the ceiling of 1,000,000,000 units.
    """
    if delta == 0:
        raise ValidationFailed("delta must not be 0.", field="delta")
    counts = await _add(session, product_id, variant_id, delta)
    _moved(session, product_id, variant_id, counts, delta, 0, reason, reference, actor_id)
    return Level(counts.on_hand, counts.reserved, counts.reorder_point)


# --- staff endpoints ------------------------------------------------------------------------------------------


async def check_unit(
    session: AsyncSession, principal: Principal, product_id: uuid.UUID, variant_id: uuid.UUID | None
) -> None:
    """Check that the caller may manage this unit's stock (API.md "Inventory": admins, procurement, vendors for
    their own products) and that the unit exists.

    Raises:
        Forbidden: the caller is not staff who manages stock.
        ProductNotFound: no live product with that id, or a vendor asks about another vendor's product (404).
        NotFound: ``variant_id`` is not a variant of the product.
        ValidationFailed: the product has variants and ``variant_id`` is missing (field ``variant_id``).
    """
    if principal.role is Role.vendor:
        product = await catalog_service.owned_product(session, principal, str(product_id))
    elif principal.may(Role.procurement):
        product = await catalog_service.get_product(session, principal, str(product_id))
    else:
        raise Forbidden("Only admins, procurement and vendors may manage stock.")
    variants = {variant.id for variant in product.variants}
    if variant_id is None and variants:
        raise ValidationFailed("This product has variants; give the variant_id.", field="variant_id")
    if variant_id is not None and variant_id not in variants:
        raise NotFound(f"Product {product_id} has no variant {variant_id}.")


async def set_unit(
    session: AsyncSession,
    principal: Principal,
    product_id: uuid.UUID,
    *,
    variant_id: uuid.UUID | None,
    on_hand: int,
    reorder_point: int | None,
    reason: str,
) -> InventoryRead:
    """``PUT /inventory/{product_id}``: set a unit's on-hand count (and reorder point) after :func:`check_unit`.

    Raises:
        Forbidden, ProductNotFound, NotFound, ValidationFailed: see :func:`check_unit`.
        InsufficientStock: ``on_hand`` is below the reserved units.
    """
    await check_unit(session, principal, product_id, variant_id)
    await set_stock(
        session,
        product_id=product_id,
        variant_id=variant_id,
        on_hand=on_hand,
        reorder_point=reorder_point,
        reason=reason,
        actor_id=principal.user_id,
    )
    return await _read(session, product_id, variant_id)


async def adjust_unit(session: AsyncSession, principal: Principal, body: StockAdjust) -> InventoryRead:
    """``POST /inventory/adjust``: :func:`adjust` after :func:`check_unit`; returns the unit's row afterwards.

    Raises:
        Forbidden, ProductNotFound, NotFound, ValidationFailed: see :func:`check_unit`.
        InsufficientStock: the result would be below zero or below the reserved units.
    """
    await _checked_adjust(session, principal, body)
    return await _read(session, body.product_id, body.variant_id)


async def _checked_adjust(
    session: AsyncSession, principal: Principal, body: StockAdjust, *, reference: str | None = None
) -> None:
    await check_unit(session, principal, body.product_id, body.variant_id)
    await adjust(
        session,
        product_id=body.product_id,
        variant_id=body.variant_id,
        delta=body.delta,
        reason=body.reason,
        actor_id=principal.user_id,
        reference=reference,
    )


async def adjust_batch(
    session: AsyncSession, principal: Principal, adjustments: Sequence[StockAdjust]
) -> tuple[str, list[InventoryRead]]:
    """``POST /inventory/batch``: apply every adjustment, all-or-nothing; each history row carries the batch's
    reference (``batch-<uuid>``). Returns ``(reference, rows)`` with each adjusted unit's row after the whole
    batch, in request order.

    The adjustments are applied in unit order (``(product_id, variant_id)``, as :func:`reserve` takes its row
    locks), each unit's own adjustments in request order: two batches naming the same units in different orders
    then lock them in the same order and cannot deadlock (PostgreSQL; ARCHITECTURE.md "row locks in a fixed
    order").

    Raises:
        BatchFailed: with ``errors: [{index, status, type, detail}]`` (by request ``index``) for every failing
            adjustment (the caller's transaction is rolled back, so nothing is changed).
    """
    reference = f"batch-{clock.new_id()}"
    errors: list[dict[str, Any]] = []
    ordered = sorted(enumerate(adjustments), key=lambda pair: _unit_key(pair[1].product_id, pair[1].variant_id))
    for index, body in ordered:
        try:
            await _checked_adjust(session, principal, body, reference=reference)
        except DomainError as exc:
            errors.append({"index": index, "status": exc.status, "type": exc.code, "detail": exc.detail})
    errors.sort(key=lambda error: int(error["index"]))
    if errors:
        raise BatchFailed(
            f"{len(errors)} of {len(adjustments)} adjustments failed; nothing was changed.", errors=errors
        )
    return reference, [await _read(session, body.product_id, body.variant_id) for body in adjustments]


async def list_units(
    session: AsyncSession, principal: Principal, filters: repository.ItemFilter, *, page: int, limit: int
) -> Paged[InventoryRead]:
    """``GET /inventory`` and ``/inventory/low-stock``: one row per product without variants and one per
    variant of live products, ordered by product name; vendors see their own products only."""
    if principal.role is Role.vendor:
        filters = repository.ItemFilter(**{**filters.__dict__, "vendor_id": principal.user_id})
    found = await repository.list_items(session, filters, page=page, limit=limit)
    return Paged([_row(item, name, variant) for item, name, variant in found.items], found.total, page, limit)


async def history(
    session: AsyncSession,
    *,
    product_id: uuid.UUID | None,
    variant_id: uuid.UUID | None,
    reference: str | None,
    page: int,
    limit: int,
) -> Paged[HistoryRead]:
    """``GET /inventory/history``: stock changes, newest first, optionally for one product, variant or reference."""
    found = await repository.list_history(
        session, product_id=product_id, variant_id=variant_id, reference=reference, page=page, limit=limit
    )
    return Paged([HistoryRead.model_validate(h) for h in found.items], found.total, page, limit)


# --- helpers --------------------------------------------------------------------------------------------------


def _merged(units: Iterable[StockUnit]) -> list[StockUnit]:
    totals: dict[tuple[uuid.UUID, uuid.UUID | None], int] = {}
    for product_id, variant_id, quantity in units:
        if quantity <= 0:
            raise ValidationFailed(f"Quantities must be positive, got {quantity}.", field="quantity")
        totals[(product_id, variant_id)] = totals.get((product_id, variant_id), 0) + quantity
    ordered = sorted(totals.items(), key=lambda kv: _unit_key(*kv[0]))
    return [(product_id, variant_id, n) for (product_id, variant_id), n in ordered]


def _unit_key(product_id: uuid.UUID, variant_id: uuid.UUID | None) -> tuple[uuid.UUID, str]:
    """The order in which stock rows are locked everywhere: by product, then variant (the product's own row
    first)."""
    return product_id, str(variant_id) if variant_id else ""


async def _add(
    session: AsyncSession, product_id: uuid.UUID, variant_id: uuid.UUID | None, delta: int
) -> repository.Counts:
    counts = await repository.add_on_hand(session, product_id, variant_id, delta)
    if counts is not None:
        return counts
    row = await repository.item(session, product_id, variant_id)
    if row is None and delta > 0:
        create_item(session, product_id=product_id, variant_id=variant_id, sku=None, on_hand=0)
        await session.flush()
        counts = await repository.add_on_hand(session, product_id, variant_id, delta)
        if counts is not None:
            return counts
        row = await repository.item(session, product_id, variant_id)
    on_hand, reserved = (row.on_hand, row.reserved) if row is not None else (0, 0)
    if on_hand + delta < reserved:
        floor = "the reserved units" if reserved else "zero"
        raise _insufficient(
            f"{_name(product_id, variant_id)} has {on_hand} on hand and {reserved} reserved; "
            f"a change of {delta} would leave it below {floor}.",
            product_id,
            variant_id,
            on_hand - reserved,
        )
    raise Conflict(f"On hand cannot exceed {repository.MAX_ON_HAND} units.")


async def recount_sold(session: AsyncSession, product_ids: Iterable[uuid.UUID]) -> None:
    """Set ``units_sold_30d`` of these products to their units sold in the last 30 days, from the stock history:
    units committed by payments and staff confirmations, less units that came back through cancellations and
    refunds (never below 0). API.md "Catalog": popularity = units sold in the last 30 days."""
    await session.flush()
    await repository.recount_sold(session, sorted(set(product_ids)), since=clock.now() - POPULARITY_WINDOW)


async def _recount_sold(session: AsyncSession, units: list[StockUnit]) -> None:
    """A sale (or its return) moves its products' popularity now, and again when it leaves the window."""
    product_ids = sorted({product_id for product_id, _, _ in units})
    await recount_sold(session, product_ids)
    jobs.enqueue(
        session,
        POPULARITY_JOB,
        {"product_ids": [str(product_id) for product_id in product_ids]},
        run_at=clock.now() + POPULARITY_WINDOW + timedelta(seconds=1),
    )


def _moved(
    session: AsyncSession,
    product_id: uuid.UUID,
    variant_id: uuid.UUID | None,
    counts: repository.Counts,
    delta: int,
    reserved_delta: int,
    reason: str,
    reference: str | None,
    actor_id: uuid.UUID | None,
) -> None:
    after = Level(counts.on_hand, counts.reserved, counts.reorder_point)
    before = Level(counts.on_hand - delta, counts.reserved - reserved_delta, counts.reorder_point)
    _history(session, product_id, variant_id, after, reserved_delta, delta, reason, reference, actor_id)
    if crossed_low(before, after):
        _low_stock_job(session, product_id, variant_id, counts.sku, after)
    catalog_cache.invalidate_after_commit(session)


def _history(
    session: AsyncSession,
    product_id: uuid.UUID,
    variant_id: uuid.UUID | None,
    after: Level,
    reserved_delta: int,
    delta: int,
    reason: str,
    reference: str | None,
    actor_id: uuid.UUID | None,
) -> None:
    repository.add_history(
        session,
        InventoryHistory(
            id=clock.new_id(),
            product_id=product_id,
            variant_id=variant_id,
            delta=delta,
            reserved_delta=reserved_delta,
            on_hand_after=after.on_hand,
            reserved_after=after.reserved,
            reason=reason,
            reference=reference,
            actor_id=actor_id,
            created_at=clock.now(),
        ),
    )


def _low_stock_job(
    session: AsyncSession, product_id: uuid.UUID, variant_id: uuid.UUID | None, sku: str | None, after: Level
) -> None:
    jobs.enqueue(
        session,
        LOW_STOCK_JOB,
        {
            "product_id": str(product_id),
            "variant_id": str(variant_id) if variant_id else None,
            "sku": sku,
            "available": after.available,
            "reorder_point": after.reorder_point,
        },
    )


def _actor(actor_id: uuid.UUID | None) -> uuid.UUID | None:
    return actor_id if actor_id is not None else request_context.current.get().actor_id


async def _available(session: AsyncSession, product_id: uuid.UUID, variant_id: uuid.UUID | None) -> int:
    row = await repository.item(session, product_id, variant_id)
    return 0 if row is None else row.on_hand - row.reserved


def _name(product_id: uuid.UUID, variant_id: uuid.UUID | None) -> str:
    return f"product {product_id}" + (f" variant {variant_id}" if variant_id else "")


def _insufficient(
    detail: str, product_id: uuid.UUID, variant_id: uuid.UUID | None, available: int
) -> InsufficientStock:
    return InsufficientStock(
        detail,
        product_id=str(product_id),
        variant_id=str(variant_id) if variant_id else None,
        available=max(available, 0),
    )


def _row(item: InventoryItem, product_name: str, variant_name: str | None) -> InventoryRead:
    available = item.on_hand - item.reserved
    return InventoryRead(
        product_id=item.product_id,
        variant_id=item.variant_id,
        sku=item.sku,
        name=f"{product_name} – {variant_name}" if variant_name else product_name,
        on_hand=item.on_hand,
        reserved=item.reserved,
        available=available,
        reorder_point=item.reorder_point,
        low_stock=is_low(available, item.reorder_point),
    )


async def _read(session: AsyncSession, product_id: uuid.UUID, variant_id: uuid.UUID | None) -> InventoryRead:
    filters = repository.ItemFilter(product_id=product_id, variant_id=variant_id)
    found = await repository.list_items(session, filters, page=1, limit=1)
    if not found.items:
        raise NotFound(f"No stock for {_name(product_id, variant_id)}.")
    item, name, variant = found.items[0]
    return _row(item, name, variant)
