"""Sellable units for the cart and the order: what a ``(product_id, variant_id)`` pair costs now, what it is
called, and how many are available (API.md "Catalog": a product with variants is sold by variant).

Three queries whatever the number of units (products, variants, stock levels).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.catalog.models import Product, ProductStatus, ProductVariant
from mercato.errors import NotFound, ValidationFailed
from mercato.inventory import service as inventory

UnitKey = tuple[uuid.UUID, uuid.UUID | None]


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


async def sellable_units(session: AsyncSession, keys: Iterable[UnitKey]) -> dict[UnitKey, Unit]:
    """The units among ``keys`` that can be sold now: the product is active and not deleted, the variant (when
    given) belongs to it, and a product with variants is only sold by variant. Other keys are left out."""
    wanted = set(keys)
    product_ids = {product_id for product_id, _ in wanted}
    if not product_ids:
        return {}
    products = {
        product.id: product
        for product in (
            await session.execute(
                select(Product).where(
                    Product.id.in_(product_ids),
                    Product.status == ProductStatus.active,
                    Product.deleted_at.is_(None),
                )
            )
        ).scalars()
    }
    variants: dict[uuid.UUID, list[ProductVariant]] = {}
    if products:
        rows = await session.execute(select(ProductVariant).where(ProductVariant.product_id.in_(list(products))))
        for variant in rows.scalars():
            variants.setdefault(variant.product_id, []).append(variant)
    levels = await inventory.levels(session, products)
    units: dict[UnitKey, Unit] = {}
    for product_id, variant_id in wanted:
        product = products.get(product_id)
        if product is None:
            continue
        own_variants = {variant.id: variant for variant in variants.get(product_id, [])}
        level = levels.get((product_id, variant_id))
        available = level.available if level else 0
        if variant_id is None:
            if own_variants:
                continue
            units[(product_id, None)] = Unit(
                product_id, None, product.name, product.sku, product.price, available, product.weight_grams,
                product.vendor_id,
            )  # fmt: skip
        elif (chosen := own_variants.get(variant_id)) is not None:
            units[(product_id, variant_id)] = Unit(
                product_id, variant_id, f"{product.name} – {chosen.name}", chosen.sku,
                product.price + chosen.price_modifier, available, product.weight_grams, product.vendor_id,
            )  # fmt: skip
    return units


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
