"""Sellable units for the cart and the order: what a ``(product_id, variant_id)`` pair costs now, what it is
called, and how many are available (API.md "Catalog": a product with variants is sold by variant).

One query whatever the number of units (products joined with their variants and stock rows).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.catalog.models import Product, ProductStatus, ProductVariant
from mercato.catalog.rules import variant_price
from mercato.db.queries import run_core
from mercato.errors import NotFound, ValidationFailed
from mercato.inventory import service as inventory
from mercato.inventory.models import InventoryItem

UnitKey = tuple[uuid.UUID, uuid.UUID | None]
#: Length of ``order_items.name``, which stores :attr:`Unit.name`.
LINE_NAME_LENGTH = 300


@dataclass(frozen=True)
class Unit:
    """A sellable unit at current catalog prices: ``unit_price`` = product price + variant modifier (Decimal,
    store currency), ``available`` = on hand − reserved, ``weight_grams`` for shipping (None when unknown)."""

    product_id: uuid.UUID
    variant_id: uuid.UUID | None
    name: str
    sku: str | None
    unit_price: Decimal
    available: int
    weight_grams: int | None
    vendor_id: uuid.UUID | None


#: The columns of :func:`sellable_units`' query, by position: 0–5 the product, 6–9 the variant (None for a product
#: without variants), 10–12 the unit's stock row (None without one).
_COLUMNS = (
    Product.id, Product.name, Product.sku, Product.price, Product.weight_grams, Product.vendor_id,
    ProductVariant.id, ProductVariant.name, ProductVariant.sku, ProductVariant.price_modifier,
    InventoryItem.on_hand, InventoryItem.reserved, InventoryItem.reorder_point,
)  # fmt: skip


#: Built once (see ``catalog.repository._Shape``): the wanted products with their variants and each unit's stock
#: row joined (a product's own stock row has no variant, a variant's names the variant).
_UNITS = (
    select(*_COLUMNS)
    .select_from(Product)
    .outerjoin(ProductVariant, ProductVariant.product_id == Product.id)
    .outerjoin(
        InventoryItem,
        and_(
            InventoryItem.product_id == Product.id,
            InventoryItem.variant_id.is_not_distinct_from(ProductVariant.id),
        ),
    )
    .where(
        Product.id.in_(bindparam("product_ids", expanding=True)),
        Product.status == ProductStatus.active,
        Product.deleted_at.is_(None),
    )
)


async def sellable_units(session: AsyncSession, keys: Iterable[UnitKey]) -> dict[UnitKey, Unit]:
    """The units among ``keys`` that can be sold now: the product is active and not deleted, the variant (when
    given) belongs to it, and a product with variants is only sold by variant. Other keys are left out.

    One query: the wanted products (columns only, no ORM objects) with their variants and each unit's stock row
    joined (a product's own stock row has no variant, a variant's names the variant), run with
    :func:`mercato.db.queries.run_core` (no autoflush: no caller reads units after staging a change of the catalog
    or stock)."""
    wanted = set(keys)
    product_ids = {product_id for product_id, _ in wanted}
    if not product_ids:
        return {}
    rows = await run_core(session, _UNITS, {"product_ids": list(product_ids)})
    products: dict[uuid.UUID, tuple[Any, ...]] = {}
    variants: dict[uuid.UUID, dict[uuid.UUID, tuple[Any, ...]]] = {}
    row: Any
    for row in rows:
        products[row[0]] = row
        if row[6] is not None:
            variants.setdefault(row[0], {})[row[6]] = row
    units: dict[UnitKey, Unit] = {}
    for product_id, variant_id in wanted:
        product = products.get(product_id)
        if product is None:
            continue
        _, name, sku, price, weight_grams, vendor_id = product[:6]
        own_variants = variants.get(product_id, {})
        if variant_id is None:
            if own_variants:
                continue
            units[(product_id, None)] = Unit(
                product_id, None, name, sku, price, _available(product), weight_grams, vendor_id
            )
        elif (chosen := own_variants.get(variant_id)) is not None:
            units[(product_id, variant_id)] = Unit(
                product_id, variant_id, line_name(name, chosen[7]), chosen[8], variant_price(price, chosen[9]),
                _available(chosen), weight_grams, vendor_id,
            )  # fmt: skip
    return units


def line_name(product_name: str, variant_name: str) -> str:
    """``"<product name> – <variant name>"`` in at most :data:`LINE_NAME_LENGTH` characters, the column
    ``order_items.name`` (a 300-character product name and a 200-character variant name would not fit): when too
    long, the product name is cut and ends with "…", so the variant name stays whole."""
    full = f"{product_name} – {variant_name}"
    if len(full) <= LINE_NAME_LENGTH:
        return full
    room = LINE_NAME_LENGTH - len(f"… – {variant_name}")
    return f"{product_name[:room]}… – {variant_name}" if room > 0 else full[:LINE_NAME_LENGTH]


def _available(row: tuple[Any, ...]) -> int:
    """Available units of a joined row (0 without a stock row), as :class:`inventory.Level` counts them."""
    on_hand, reserved, reorder_point = row[10:13]
    return inventory.Level(on_hand, reserved, reorder_point).available if on_hand is not None else 0


async def require_units(
    session: AsyncSession, keys: Iterable[UnitKey], *, field: str = "product_id"
) -> dict[UnitKey, Unit]:
    """:func:`sellable_units` for keys that must all be sellable.

    Raises:
        ValidationFailed: a product with variants asked for without ``variant_id`` (field ``variant_id``).
        NotFound: an unknown, inactive or deleted product, or a variant that is not the product's.
    """
    wanted = list(dict.fromkeys(keys))
    units = await sellable_units(session, wanted)
    for product_id, variant_id in wanted:
        if (product_id, variant_id) in units:
            continue
        if variant_id is None and await _has_variants(session, product_id):
            raise ValidationFailed("This product is sold by variant: give variant_id.", field="variant_id")
        what = f"variant {variant_id} of product {product_id}" if variant_id else f"product {product_id}"
        raise NotFound(f"No {what} is for sale.", field=field)
    return units


async def _has_variants(session: AsyncSession, product_id: uuid.UUID) -> bool:
    query = select(ProductVariant.id).where(ProductVariant.product_id == product_id).limit(1)
    return (await session.execute(query)).first() is not None
