"""Every inventory query."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.inventory.models import InventoryItem


async def items_for_products(session: AsyncSession, product_ids: Iterable[uuid.UUID]) -> list[InventoryItem]:
    """Every stock row of the given products (their own rows and their variants')."""
    ids = list(product_ids)
    if not ids:
        return []
    return list((await session.execute(select(InventoryItem).where(InventoryItem.product_id.in_(ids)))).scalars())


async def item(session: AsyncSession, product_id: uuid.UUID, variant_id: uuid.UUID | None) -> InventoryItem | None:
    """The stock row of a product (``variant_id`` None) or of one of its variants."""
    query = select(InventoryItem).where(InventoryItem.product_id == product_id)
    query = query.where(
        InventoryItem.variant_id.is_(None) if variant_id is None else InventoryItem.variant_id == variant_id
    )
    return (await session.execute(query)).scalar_one_or_none()


async def set_on_hand(session: AsyncSession, item_id: uuid.UUID, on_hand: int) -> bool:
    """Set ``on_hand`` unless that would leave fewer units than are reserved; True when it was set."""
    result = await session.execute(
        update(InventoryItem)
        .where(InventoryItem.id == item_id, InventoryItem.reserved <= on_hand)
        .values(on_hand=on_hand)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
