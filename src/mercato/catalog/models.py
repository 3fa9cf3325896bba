"""Catalog tables: categories (a tree), products, variants, images, attributes and their allowed values.

Prices are ``Money`` (NUMERIC(12, 2), ``Decimal``); a variant's price is its product's price plus its
``price_modifier`` (API.md "Catalog"). Products and categories are soft-deleted (``deleted_at``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Numeric, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mercato.db.base import Base, TimestampMixin, uuid_pk
from mercato.platform import clock


class ProductStatus(StrEnum):
    """Lifecycle of a product; only ``active`` products are visible to the public."""

    draft = "draft"
    active = "active"
    inactive = "inactive"
    archived = "archived"


class Category(TimestampMixin, Base):
    """A node of the category tree (``parent_id`` null at the roots), ordered by ``position`` among siblings."""

    __tablename__ = "categories"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("categories.id"), index=True)
    image_url: Mapped[str | None] = mapped_column(String(1000))
    position: Mapped[int] = mapped_column(default=0)
    deleted_at: Mapped[datetime | None]


class Product(TimestampMixin, Base):
    """A product. ``sku`` is the internal SKU (source 001's ``internal_sku``); ``attributes`` maps attribute
    slugs to values, ``specifications`` is free-form key/value data, ``tags`` a list of words."""

    __tablename__ = "products"
    # The public listing filters on status among live products (deleted_at IS NULL) and sorts by one column, ties
    # broken by id: these partial indexes hand the rows over already in order, so a page reads `limit` index
    # entries, not the catalog. Partial, because PostgreSQL does not take `deleted_at IS NULL` as fixing the
    # column's value: with deleted_at inside the index it sorted every live product instead.
    __table_args__ = tuple(
        Index(
            f"ix_products_live_{column}",
            "status",
            column,
            "id",
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        )
        for column in ("created_at", "price", "name")
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(300))
    slug: Mapped[str] = mapped_column(String(300), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    sku: Mapped[str | None] = mapped_column(String(64), unique=True)
    price: Mapped[Decimal]
    compare_at_price: Mapped[Decimal | None]
    status: Mapped[str] = mapped_column(String(10), default=ProductStatus.draft, index=True)
    category_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("categories.id"), index=True)
    vendor_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    brand: Mapped[str | None] = mapped_column(String(120), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    specifications: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    weight_grams: Mapped[int | None]
    rating_average: Mapped[Decimal] = mapped_column(Numeric(3, 2), default=Decimal("0"))
    rating_count: Mapped[int] = mapped_column(default=0)
    units_sold_30d: Mapped[int] = mapped_column(default=0, index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(index=True)

    variants: Mapped[list[ProductVariant]] = relationship(
        lazy="raise", order_by="ProductVariant.position", cascade="all, delete-orphan"
    )
    images: Mapped[list[ProductImage]] = relationship(
        lazy="raise", order_by="ProductImage.position", cascade="all, delete-orphan"
    )
    category: Mapped[Category | None] = relationship(lazy="raise")


class ProductVariant(TimestampMixin, Base):
    """A purchasable variation of a product (size, colour ...) with its own SKU and stock."""

    __tablename__ = "product_variants"

    id: Mapped[uuid.UUID] = uuid_pk()
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), index=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    options: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    price_modifier: Mapped[Decimal] = mapped_column(default=Decimal("0"))
    image_url: Mapped[str | None] = mapped_column(String(1000))
    position: Mapped[int] = mapped_column(default=0)


class ProductImage(Base):
    """An image of a product: a stored upload (``storage_key`` set) or a remote URL."""

    __tablename__ = "product_images"

    id: Mapped[uuid.UUID] = uuid_pk()
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(1000))
    thumbnail_url: Mapped[str | None] = mapped_column(String(1000))
    alt: Mapped[str | None] = mapped_column(String(300))
    position: Mapped[int] = mapped_column(default=0)
    width: Mapped[int | None]
    height: Mapped[int | None]
    storage_key: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class Attribute(TimestampMixin, Base):
    """An attribute definition (e.g. ``Size``); products refer to it by ``slug`` in ``Product.attributes``."""

    __tablename__ = "attributes"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(100))
    slug: Mapped[str] = mapped_column(String(100), unique=True)


class AttributeValue(Base):
    """An allowed value of an attribute (e.g. ``XL``)."""

    __tablename__ = "attribute_values"
    __table_args__ = (UniqueConstraint("attribute_id", "slug"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    attribute_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("attributes.id", ondelete="CASCADE"), index=True)
    value: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(default=0)
