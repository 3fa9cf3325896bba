"""Inventory use cases the catalog needs: stock rows for new products and variants, setting on-hand counts, and
reading available units. Every stock change goes through this module (ARCHITECTURE.md)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.inventory import repository
from mercato.inventory.errors import InsufficientStock
from mercato.inventory.models import InventoryItem
from mercato.platform import clock


@dataclass(frozen=True)
class Level:
    """Stock of one unit: ``on_hand``, ``reserved``, ``available = on_hand - reserved``."""

    on_hand: int
    reserved: int
    reorder_point: int

    @property
    def available(self) -> int:
        """Units that can still be sold."""
        return self.on_hand - self.reserved


def create_item(
    session: AsyncSession,
    *,
    product_id: uuid.UUID,
    variant_id: uuid.UUID | None,
    sku: str | None,
    on_hand: int,
    reorder_point: int = 0,
) -> InventoryItem:
    """Add the stock row of a new product (``variant_id`` None) or variant."""
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
    return row


async def set_stock(
    session: AsyncSession,
    *,
    product_id: uuid.UUID,
    variant_id: uuid.UUID | None,
    on_hand: int | None = None,
    reorder_point: int | None = None,
    sku: str | None = None,
) -> None:
    """Set the on-hand count (and reorder point, SKU) of a unit, creating its row if missing.

    Raises:
        InsufficientStock: ``on_hand`` is below the units already reserved.
    """
    row = await repository.item(session, product_id, variant_id)
    if row is None:
        create_item(
            session,
            product_id=product_id,
            variant_id=variant_id,
            sku=sku,
            on_hand=on_hand or 0,
            reorder_point=reorder_point or 0,
        )
        return
    if on_hand is not None and not await repository.set_on_hand(session, row.id, on_hand):
        raise InsufficientStock(f"{row.reserved} units are reserved; on hand cannot go below that.")
    if reorder_point is not None:
        row.reorder_point = reorder_point
    if sku is not None:
        row.sku = sku
    row.updated_at = clock.now()


async def levels(
    session: AsyncSession, product_ids: Iterable[uuid.UUID]
) -> dict[tuple[uuid.UUID, uuid.UUID | None], Level]:
    """Stock levels keyed by ``(product_id, variant_id)`` for every unit of the given products (one query)."""
    return {
        (row.product_id, row.variant_id): Level(row.on_hand, row.reserved, row.reorder_point)
        for row in await repository.items_for_products(session, product_ids)
    }
