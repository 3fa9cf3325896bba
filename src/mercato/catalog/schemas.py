"""Request and response bodies of the catalog endpoints (API.md "Catalog").

Money in requests is a JSON number or string with at most two decimals and no sign; in responses it is a
decimal string with exactly two decimals.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, field_serializer, field_validator
from pydantic_core import to_json

from mercato.catalog.models import ProductStatus
from mercato.catalog.rules import RESERVED_SLUGS
from mercato.schemas import RequestModel, ResponseModel

Price = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2, examples=["19.99"])]
Modifier = Annotated[Decimal, Field(ge=-1_000_000, le=1_000_000, max_digits=12, decimal_places=2)]
Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")]


def _not_reserved(value: str) -> str:
    if value in RESERVED_SLUGS:
        raise ValueError(f"'{value}' is a reserved word and cannot be a slug")
    return value


_SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
# Each text is at most as long as its database column (PostgreSQL refuses a longer one; SQLite would keep it).
Slug = Annotated[str, Field(min_length=1, max_length=300, pattern=_SLUG_PATTERN), AfterValidator(_not_reserved)]
CategorySlug = Annotated[str, Field(min_length=1, max_length=200, pattern=_SLUG_PATTERN), AfterValidator(_not_reserved)]
AttributeSlug = Annotated[
    str, Field(min_length=1, max_length=100, pattern=_SLUG_PATTERN), AfterValidator(_not_reserved)
]
Name = Annotated[str, Field(min_length=1, max_length=300)]
VariantName = Annotated[str, Field(min_length=1, max_length=200)]
Tag = Annotated[str, Field(min_length=1, max_length=50)]
Stock = Annotated[int, Field(ge=0, le=10_000_000)]
#: A product's ``attributes``: at most 50 keys of at most 100 characters (create and update alike).
Attributes = Annotated[dict[Annotated[str, Field(max_length=100)], Any], Field(max_length=50)]
#: A product's ``specifications``: at most 100 keys of at most 100 characters (create and update alike).
Specifications = Annotated[dict[Annotated[str, Field(max_length=100)], Any], Field(max_length=100)]


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.quantize(Decimal('0.01'))}"


class VariantCreate(RequestModel):
    """A variant: its own SKU, options such as size and colour, a price modifier and stock."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sku": "TEE-BLK-M",
                    "name": "Black / M",
                    "options": {"colour": "black", "size": "M"},
                    "price_modifier": "2.00",
                    "stock": 12,
                }
            ]
        }
    )

    sku: Sku
    name: VariantName
    options: dict[Annotated[str, Field(max_length=50)], Annotated[str, Field(max_length=100)]] = Field(
        default_factory=dict, max_length=20
    )
    price_modifier: Modifier = Decimal("0")
    stock: Stock = 0
    reorder_point: Stock = 0
    image_url: Annotated[str, Field(max_length=1000)] | None = None


class VariantUpdate(RequestModel):
    """Partial variant update; stock changes go through the inventory endpoints once they exist."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"price_modifier": "3.00", "name": "Black / M"}]}
    )

    sku: Sku | None = None
    name: VariantName | None = None
    options: dict[str, str] | None = None
    price_modifier: Modifier | None = None
    stock: Stock | None = None
    image_url: Annotated[str, Field(max_length=1000)] | None = None


class ProductCreate(RequestModel):
    """``POST /products``. ``slug`` is made from the name when omitted."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Monospace Tee",
                    "description": "Soft cotton tee.",
                    "sku": "TEE-MONO",
                    "price": "24.00",
                    "brand": "Saleor",
                    "status": "active",
                    "tags": ["tee", "cotton"],
                    "weight_grams": 180,
                    "variants": [
                        {"sku": "TEE-MONO-S", "name": "S", "options": {"size": "S"}, "stock": 5},
                        {
                            "sku": "TEE-MONO-L",
                            "name": "L",
                            "options": {"size": "L"},
                            "price_modifier": "2.00",
                            "stock": 3,
                        },
                    ],
                }
            ]
        }
    )

    name: Name
    slug: Slug | None = None
    description: Annotated[str, Field(max_length=20_000)] | None = None
    sku: Sku | None = None
    price: Price
    compare_at_price: Price | None = None
    category_id: uuid.UUID | None = None
    brand: Annotated[str, Field(min_length=1, max_length=120)] | None = None
    status: ProductStatus = ProductStatus.draft
    attributes: Attributes = Field(default_factory=dict)
    specifications: Specifications = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    weight_grams: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    stock: Stock = 0
    reorder_point: Stock = 0
    variants: list[VariantCreate] = Field(default_factory=list, max_length=200)


class ProductUpdate(RequestModel):
    """``PATCH``/``PUT /products/{id}``: fields left out keep their value."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"price": "21.50", "status": "active", "tags": ["tee", "sale"]}]}
    )

    name: Name | None = None
    slug: Slug | None = None
    description: Annotated[str, Field(max_length=20_000)] | None = None
    sku: Sku | None = None
    price: Price | None = None
    compare_at_price: Price | None = None
    category_id: uuid.UUID | None = None
    brand: Annotated[str, Field(min_length=1, max_length=120)] | None = None
    status: ProductStatus | None = None
    attributes: Attributes | None = None
    specifications: Specifications | None = None
    tags: list[Tag] | None = Field(default=None, max_length=50)
    weight_grams: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    stock: Stock | None = None
    reorder_point: Stock | None = None

    @field_validator("attributes", "specifications", "tags")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        """Leaving these out keeps their value; an explicit ``null`` is refused (422 naming the field): the
        columns hold an object or a list, never JSON null."""
        if value is None:
            raise ValueError("cannot be null; send {} or [] to empty it")
        return value


class ImageRead(ResponseModel):
    """An image; ``url`` may be absolute (remote) or a path under ``/media``."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01932c71-4444-7cc3-9d1e-3f6a2b1c0d9e",
                    "url": "/media/products/01932c71.webp",
                    "thumbnail_url": "/media/products/01932c71-thumb.webp",
                    "alt": "Front view",
                    "position": 0,
                    "width": 1200,
                    "height": 900,
                }
            ]
        }
    )

    id: uuid.UUID
    url: str
    thumbnail_url: str | None
    alt: str | None
    position: int
    width: int | None = None
    height: int | None = None


class VariantRead(ResponseModel):
    """A variant with its computed ``price`` (product price + modifier) and available ``stock``."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01932c71-5555-7cc3-9d1e-3f6a2b1c0d9e",
                    "product_id": "01932c70-0000-7cc3-9d1e-3f6a2b1c0d9e",
                    "sku": "TEE-BLK-M",
                    "name": "Black / M",
                    "options": {"colour": "black", "size": "M"},
                    "price_modifier": "2.00",
                    "price": "21.99",
                    "stock": 12,
                    "image_url": None,
                }
            ]
        }
    )

    id: uuid.UUID
    product_id: uuid.UUID
    sku: str
    name: str
    options: dict[str, str]
    price_modifier: Decimal
    price: Decimal
    stock: int
    image_url: str | None

    @field_serializer("price_modifier", "price")
    def _ser(self, value: Decimal) -> str | None:
        return _money(value)


class CategoryRef(ResponseModel):
    """The product's category, embedded."""

    id: uuid.UUID
    name: str
    slug: str


class ProductRead(ResponseModel):
    """A product as API.md defines it; ``stock`` is available units (summed over variants when it has them)."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01932c6e-8f7a-7cc3-9d1e-3f6a2b1c0d9e",
                    "name": "Monospace Tee",
                    "slug": "monospace-tee",
                    "description": "Soft cotton tee.",
                    "sku": "TEE-MONO",
                    "price": "24.00",
                    "compare_at_price": None,
                    "currency": "USD",
                    "status": "active",
                    "category_id": None,
                    "category": None,
                    "vendor_id": None,
                    "brand": "Saleor",
                    "attributes": {},
                    "specifications": {},
                    "tags": ["tee"],
                    "images": [],
                    "variants": [],
                    "stock": 8,
                    "in_stock": True,
                    "rating_average": "0.00",
                    "rating_count": 0,
                    "weight_grams": 180,
                    "created_at": "2026-11-22T08:00:00Z",
                    "updated_at": "2026-11-22T08:00:00Z",
                }
            ]
        }
    )

    id: uuid.UUID
    name: str
    slug: str
    description: str | None
    sku: str | None
    price: Decimal
    compare_at_price: Decimal | None
    currency: str
    status: ProductStatus
    category_id: uuid.UUID | None
    category: CategoryRef | None
    vendor_id: uuid.UUID | None
    brand: str | None
    attributes: dict[str, Any]
    specifications: dict[str, Any]
    tags: list[str]
    images: list[ImageRead]
    variants: list[VariantRead]
    stock: int
    in_stock: bool
    rating_average: Decimal
    rating_count: int
    weight_grams: int | None
    created_at: datetime
    updated_at: datetime

    @field_serializer("price", "compare_at_price", "rating_average")
    def _ser(self, value: Decimal | None) -> str | None:
        return _money(value)


# --- the listing's lean path ---------------------------------------------------------------------------------
# A page of 20 products validated as ProductRead models costs about as much CPU as the rest of the request, so
# listings and search results are serialised by the database (``catalog.repository._product_json``) and only
# wrapped in the envelope here; tests/api/test_catalog.py checks that each item equals the product's own JSON.


def page_json(items: Sequence[str], total: int, page: int, limit: int) -> bytes:
    """The list envelope ``{"data": [...], "pagination": {...}}`` of products already serialised, as
    ``Page[ProductRead]`` would be (API.md §1).

    Args:
        items: each product of the page as the JSON text of ``ProductRead``.
        total: products matching in all.
        page: 1-based page number.
        limit: products per page (≥ 1).

    Returns:
        UTF-8 JSON bytes.
    """
    total_pages = math.ceil(total / limit) if total else 0
    pagination = {"page": page, "limit": limit, "total": total, "total_pages": total_pages}
    return b'{"data":[' + ",".join(items).encode() + b'],"pagination":' + to_json(pagination) + b"}"


class CategoryCreate(RequestModel):
    """``POST /categories``."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [{"name": "T-shirts", "parent_id": None, "description": "Tees of every colour", "position": 1}]
        }
    )

    name: Annotated[str, Field(min_length=1, max_length=200)]
    slug: CategorySlug | None = None
    description: Annotated[str, Field(max_length=5000)] | None = None
    parent_id: uuid.UUID | None = None
    image_url: Annotated[str, Field(max_length=1000)] | None = None
    position: Annotated[int, Field(ge=0, le=1_000_000)] = 0


class CategoryUpdate(RequestModel):
    """``PATCH /categories/{id}``; moving a category under its own descendant is refused (409)."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"parent_id": "01932c6e-8f7a-7cc3-9d1e-3f6a2b1c0d9e", "position": 2}]}
    )

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    slug: CategorySlug | None = None
    description: Annotated[str, Field(max_length=5000)] | None = None
    parent_id: uuid.UUID | None = None
    image_url: Annotated[str, Field(max_length=1000)] | None = None
    position: Annotated[int, Field(ge=0, le=1_000_000)] | None = None

    @field_validator("position")
    @classmethod
    def _position_not_null(cls, value: int | None) -> int:
        """Leaving ``position`` out keeps it; an explicit ``null`` is refused (422 naming the field)."""
        if value is None:
            raise ValueError("cannot be null")
        return value


class CategoryRead(ResponseModel):
    """A category; ``children`` is filled only for ``?tree=true``."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01932c6e-8f7a-7cc3-9d1e-3f6a2b1c0d9e",
                    "name": "T-shirts",
                    "slug": "t-shirts",
                    "description": None,
                    "parent_id": None,
                    "image_url": None,
                    "position": 1,
                }
            ]
        }
    )

    id: uuid.UUID
    name: str
    slug: str
    description: str | None
    parent_id: uuid.UUID | None
    image_url: str | None
    position: int
    children: list[CategoryRead] | None = None


class AttributeCreate(RequestModel):
    """``POST /attributes``: a definition and, optionally, its allowed values."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"name": "Size", "values": ["S", "M", "L"]}]}
    )

    name: Annotated[str, Field(min_length=1, max_length=100)]
    slug: AttributeSlug | None = None
    values: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=500)


class AttributeValueCreate(RequestModel):
    """``POST /attributes/{id}/values``."""

    model_config = RequestModel.model_config | ConfigDict(json_schema_extra={"examples": [{"value": "XL"}]})

    value: Annotated[str, Field(min_length=1, max_length=200)]


class AttributeValueRead(ResponseModel):
    """An allowed value."""

    id: uuid.UUID
    value: str
    slug: str
    position: int


class AttributeRead(ResponseModel):
    """An attribute with its allowed values."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01932c6e-8f7a-7cc3-9d1e-3f6a2b1c0d9e",
                    "name": "Size",
                    "slug": "size",
                    "values": [
                        {
                            "id": "01932c6e-8f7a-7cc3-9d1e-3f6a2b1c0d9f",
                            "value": "S",
                            "slug": "s",
                            "position": 0,
                        }
                    ],
                }
            ]
        }
    )

    id: uuid.UUID
    name: str
    slug: str
    values: list[AttributeValueRead]


class PublicCatalogItem(ResponseModel):
    """One row of source 001's public ``/catalog``."""

    id: uuid.UUID
    internal_sku: str | None
    name: str
    category_id: uuid.UUID | None
    min_price: Decimal
    max_price: Decimal
    supplier_count: int

    @field_serializer("min_price", "max_price")
    def _ser(self, value: Decimal) -> str | None:
        return _money(value)


class PublicCatalog(ResponseModel):
    """Source 001's ``/catalog`` envelope, exactly: ``{total_count, page, limit, data}``."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "total_count": 1,
                    "page": 1,
                    "limit": 50,
                    "data": [
                        {
                            "id": "01932c70-0000-7cc3-9d1e-3f6a2b1c0d9e",
                            "internal_sku": "BEA-ESS-ESS-001",
                            "name": "Essence Mascara Lash Princess",
                            "category_id": "01932c6f-9999-7cc3-9d1e-3f6a2b1c0d9e",
                            "min_price": "9.99",
                            "max_price": "9.99",
                            "supplier_count": 0,
                        }
                    ],
                }
            ]
        }
    )

    total_count: int
    page: int
    limit: int
    data: list[PublicCatalogItem]
