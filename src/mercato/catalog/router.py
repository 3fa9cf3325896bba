"""``/api/v1/products``, ``/categories``, ``/attributes`` and source 001's public ``/catalog``.

Public reads are cached per catalog generation and carry an ``ETag`` (``If-None-Match`` → 304); product updates
honour ``If-Match`` (412 on mismatch).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import Field

from mercato.catalog import cache, categories, repository
from mercato.catalog import service as catalog_service
from mercato.catalog.errors import (
    BulkFailed,
    CategoryCycle,
    CategoryInUse,
    CategoryNotFound,
    DuplicateValue,
    ProductNotFound,
    UnknownCategory,
    VariantInUse,
)
from mercato.catalog.schemas import (
    AttributeCreate,
    AttributeRead,
    AttributeValueCreate,
    CategoryCreate,
    CategoryRead,
    CategoryUpdate,
    ProductCreate,
    ProductRead,
    ProductUpdate,
    PublicCatalog,
    PublicCatalogItem,
    VariantCreate,
    VariantRead,
    VariantUpdate,
)
from mercato.errors import Forbidden, PreconditionFailed, ValidationFailed
from mercato.identity.models import Role
from mercato.identity.principal import Principal
from mercato.inventory.errors import InsufficientStock
from mercato.schemas import RequestModel
from mercato.web.conditional import check_if_match, json_response
from mercato.web.deps import Admin, OptionalPrincipal, ServicesDep, SessionDep, require
from mercato.web.pagination import Page, PageDep, envelope, link_header
from mercato.web.problems import problems

router = APIRouter(tags=["catalog"], route_class=cache.CachedReadRoute)
Manager = Annotated[Principal, Depends(require(Role.vendor))]
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified (`If-None-Match` matched the `ETag`)"}
}

SortField = Literal[
    "price",
    "-price",
    "rating",
    "-rating",
    "popularity",
    "-popularity",
    "created_at",
    "-created_at",
    "name",
    "-name",
]
MoneyQuery = Annotated[Decimal | None, Query(ge=0, max_digits=12, decimal_places=2)]


async def product_filters(
    category: Annotated[
        str | None, Query(alias="category_id", max_length=300, description="Includes subcategories")
    ] = None,
    min_price: MoneyQuery = None,
    max_price: MoneyQuery = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200, description="Part of the name or brand")] = None,
    brand: Annotated[str | None, Query(max_length=120)] = None,
    vendor_id: uuid.UUID | None = None,
    in_stock: bool | None = None,
    status_: Annotated[
        Literal["draft", "active", "inactive", "archived"] | None,
        Query(alias="status", description="Admins and staff only"),
    ] = None,
    sort: Annotated[SortField, Query(description="A field; `-` in front for descending")] = "-created_at",
) -> dict[str, Any]:
    """The list filters of API.md "Catalog" (``min_price > max_price`` → 422)."""
    if min_price is not None and max_price is not None and min_price > max_price:
        raise ValidationFailed("min_price must not exceed max_price.", loc=["query", "min_price"])
    return {
        "category_id": category,
        "min_price": min_price,
        "max_price": max_price,
        "q": q,
        "brand": brand,
        "vendor_id": vendor_id,
        "in_stock": in_stock,
        "status": status_,
        "sort": sort,
    }


Filters = Annotated[dict[str, Any], Depends(product_filters)]


async def product_page(
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    principal: Principal | None,
    page: int,
    limit: int,
    params: dict[str, Any],
) -> Response:
    """Run a product listing, cached for the public, and answer with ``ETag`` and ``Link`` headers."""
    staff = catalog_service.sees_all_statuses(principal)
    if params["status"] is not None and not staff:
        raise Forbidden("Only staff may filter by status.")
    if params["status"]:
        statuses: tuple[str, ...] = (params["status"],)
    else:
        statuses = ("draft", "active", "inactive", "archived") if staff else ("active",)

    async def build() -> dict[str, Any]:
        category_ids = await catalog_service.category_filter(session, params["category_id"])
        filters = repository.ProductFilter(
            category_ids=category_ids,
            min_price=params["min_price"],
            max_price=params["max_price"],
            q=params["q"],
            brand=params["brand"],
            vendor_id=params["vendor_id"],
            in_stock=params["in_stock"],
            statuses=statuses,
        )
        body, total = await catalog_service.listing(session, filters, sort=params["sort"], page=page, limit=limit)
        return {"body": body, "total": total}

    key = "products:" + repr(sorted({**params, "page": page, "limit": limit}.items()))
    result = await build() if staff else await cache.cached(services, key, build)
    return json_response(request, result["body"], headers=link_header(request, page, limit, result["total"]))


@router.get("/products", response_model=Page[ProductRead], summary="List products", responses=NOT_MODIFIED)
@cache.public_read
async def list_products(
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    principal: OptionalPrincipal,
    paging: PageDep,
    filters: Filters,
) -> Response:
    """Active products (staff see every status). Filters combine; `category_id` includes subcategories; sort by
    `price`, `rating`, `popularity` (units sold in the last 30 days), `created_at` or `name`."""
    return await product_page(request, session, services, principal, paging.page, paging.limit, filters)


@router.get("/products/deleted", response_model=Page[ProductRead], summary="List deleted products")
async def deleted_products(
    request: Request, response: Response, session: SessionDep, _: Admin, paging: PageDep
) -> Page[ProductRead]:
    """Soft-deleted products, most recently deleted first (admin)."""
    found = await catalog_service.deleted_products(session, page=paging.page, limit=paging.limit)
    response.headers.update(link_header(request, paging.page, paging.limit, found.total))
    return envelope(ProductRead, found)


@router.get(
    "/products/category/{category_id}",
    response_model=Page[ProductRead],
    responses=NOT_MODIFIED,
    summary="Products of a category",
)
@router.get(
    "/categories/{category_id}/products",
    response_model=Page[ProductRead],
    responses=NOT_MODIFIED,
    summary="Products of a category",
    operation_id="category_products",
)
@cache.public_read
async def products_of_category(
    category_id: str,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    principal: OptionalPrincipal,
    paging: PageDep,
    filters: Filters,
) -> Response:
    """Same as `GET /products?category_id=` (subcategories included)."""
    return await product_page(
        request,
        session,
        services,
        principal,
        paging.page,
        paging.limit,
        {**filters, "category_id": category_id},
    )


class BulkOperation(RequestModel):
    """One operation of ``POST /products/bulk``."""

    op: Literal["create", "update", "delete"]
    id: str | None = Field(default=None, max_length=300)
    data: dict[str, Any] | None = None


class BulkRequest(RequestModel):
    """Up to 500 operations, applied all-or-nothing."""

    model_config = RequestModel.model_config | {
        "json_schema_extra": {
            "examples": [
                {
                    "operations": [
                        {
                            "op": "create",
                            "data": {"name": "Mug", "price": "9.50", "sku": "MUG-1", "stock": 10},
                        },
                        {"op": "update", "id": "mug-2", "data": {"price": "8.00"}},
                        {"op": "delete", "id": "old-mug"},
                    ]
                }
            ]
        }
    }

    operations: list[BulkOperation] = Field(min_length=1, max_length=500)


@router.post(
    "/products/bulk",
    summary="Create, update and delete many products at once",
    responses=problems(BulkFailed, Forbidden),
)
async def bulk_products(body: BulkRequest, session: SessionDep, principal: Manager) -> dict[str, Any]:
    """All-or-nothing: if any operation fails, nothing is written and the 422 lists every failure by `index`
    (`{index, status, type, detail}`). On success: `{"results": [{index, op, id}]}`."""
    operations = [op.model_dump() for op in body.operations]
    return {"results": await catalog_service.bulk(session, principal, operations)}


@router.get(
    "/products/{product_id}",
    response_model=ProductRead,
    responses={**problems(ProductNotFound), **NOT_MODIFIED},
    summary="Get a product by id or slug",
)
@cache.public_read
async def get_product(
    product_id: str,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    principal: OptionalPrincipal,
) -> Response:
    """`{product_id}` is tried as an id, then as a slug. Sends an `ETag`."""

    async def build() -> bytes:
        product = await catalog_service.get_product(session, principal, product_id)
        return (await catalog_service.present(session, [product]))[0].model_dump_json().encode()

    staff = catalog_service.sees_all_statuses(principal) or (principal is not None and principal.role is Role.vendor)
    body = await build() if staff else await cache.cached(services, f"product:{product_id}", build)
    return json_response(request, body)


@router.post(
    "/products",
    status_code=status.HTTP_201_CREATED,
    response_model=ProductRead,
    responses=problems(DuplicateValue, UnknownCategory, Forbidden),
    summary="Create a product",
)
async def create_product(body: ProductCreate, session: SessionDep, principal: Manager) -> ProductRead:
    """Admins and vendors (a vendor's product belongs to that vendor). Variants each get their own stock."""
    product = await catalog_service.create_product(session, principal, body)
    return (await catalog_service.present(session, [product]))[0]


@router.patch(
    "/products/{product_id}",
    response_model=ProductRead,
    responses=problems(ProductNotFound, DuplicateValue, UnknownCategory, PreconditionFailed, InsufficientStock),
    summary="Update a product",
)
@router.put("/products/{product_id}", response_model=ProductRead, include_in_schema=False)
async def update_product(
    product_id: str, body: ProductUpdate, request: Request, session: SessionDep, principal: Manager
) -> ProductRead:
    """Partial update (`PUT` is an alias). Send `If-Match: <ETag>` to refuse the change (412) if the product
    changed since you read it."""
    if request.headers.get("if-match"):
        # locked, so that two PATCHes sent with the same ETag cannot both pass the comparison
        current = await catalog_service.get_product(session, principal, product_id, lock=True)
        check_if_match(request, (await catalog_service.present(session, [current]))[0].model_dump_json().encode())
    product = await catalog_service.update_product(session, principal, product_id, body)
    return (await catalog_service.present(session, [product]))[0]


@router.delete(
    "/products/{product_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(ProductNotFound),
    summary="Delete a product (soft)",
)
async def delete_product(product_id: str, session: SessionDep, principal: Manager) -> None:
    """The product disappears from public reads; an admin can restore it."""
    await catalog_service.delete_product(session, principal, product_id)


@router.post(
    "/products/{product_id}/restore",
    response_model=ProductRead,
    responses=problems(ProductNotFound),
    summary="Restore a deleted product",
)
async def restore_product(product_id: str, session: SessionDep, _: Admin) -> ProductRead:
    """Admin only."""
    product = await catalog_service.restore_product(session, product_id)
    return (await catalog_service.present(session, [product]))[0]


@router.get(
    "/products/{product_id}/variants",
    response_model=Page[VariantRead],
    responses=problems(ProductNotFound),
    summary="List a product's variants",
)
async def list_variants(product_id: str, session: SessionDep, principal: OptionalPrincipal) -> Page[VariantRead]:
    """Each with its price (product price + modifier) and available stock."""
    product = await catalog_service.get_product(session, principal, product_id)
    variants = (await catalog_service.present(session, [product]))[0].variants
    return Page[VariantRead](
        data=variants,
        pagination={
            "page": 1,
            "limit": max(len(variants), 1),
            "total": len(variants),
            "total_pages": 1 if variants else 0,
        },
    )


@router.post(
    "/products/{product_id}/variants",
    status_code=status.HTTP_201_CREATED,
    response_model=VariantRead,
    responses=problems(ProductNotFound, DuplicateValue),
    summary="Add a variant",
)
async def add_variant(product_id: str, body: VariantCreate, session: SessionDep, principal: Manager) -> VariantRead:
    """The variant gets its own SKU and stock row."""
    product = await catalog_service.add_variant(session, principal, product_id, body)
    read = (await catalog_service.present(session, [product]))[0]
    return next(v for v in read.variants if v.sku == body.sku)


@router.patch(
    "/products/{product_id}/variants/{variant_id}",
    response_model=VariantRead,
    responses=problems(ProductNotFound, DuplicateValue, InsufficientStock),
    summary="Update a variant",
)
@router.put("/products/{product_id}/variants/{variant_id}", response_model=VariantRead, include_in_schema=False)
async def update_variant(
    product_id: str, variant_id: uuid.UUID, body: VariantUpdate, session: SessionDep, principal: Manager
) -> VariantRead:
    """Partial update; `stock` sets the variant's on-hand units."""
    product = await catalog_service.update_variant(session, principal, product_id, variant_id, body)
    read = (await catalog_service.present(session, [product]))[0]
    return next(v for v in read.variants if v.id == variant_id)


@router.delete(
    "/products/{product_id}/variants/{variant_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(ProductNotFound, VariantInUse),
    summary="Delete a variant",
)
async def delete_variant(product_id: str, variant_id: uuid.UUID, session: SessionDep, principal: Manager) -> None:
    """Removes the variant and its stock row. Refused (409 `conflict`, "Variant is in unfinished orders") while
    an order with a line of it is pending, processing or shipped: its payment, cancellation or expiry still moves
    the variant's stock. Allowed once those orders are delivered, cancelled or returned."""
    await catalog_service.delete_variant(session, principal, product_id, variant_id)


# --- source 001's public catalog ------------------------------------------------------------------------------


@router.get("/catalog", response_model=PublicCatalog, responses=NOT_MODIFIED, summary="Public catalog (source 001)")
@cache.public_read
async def public_catalog(
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    category_id: Annotated[str | None, Query(max_length=300)] = None,
    min_price: MoneyQuery = None,
    max_price: MoneyQuery = None,
    search: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> Response:
    """Active products as `{total_count, page, limit, data: [{id, internal_sku, name, category_id, min_price,
    max_price, supplier_count}]}`. Until supplier items are linked, `min_price` = `max_price` = the product's price
    and `supplier_count` = 0."""
    if min_price is not None and max_price is not None and min_price > max_price:
        raise ValidationFailed("min_price must not exceed max_price.", loc=["query", "min_price"])

    async def build() -> bytes:
        category_ids = await catalog_service.category_filter(session, category_id)
        rows, total = await repository.public_catalog(
            session,
            category_ids=category_ids,
            min_price=min_price,
            max_price=max_price,
            search=search,
            page=page,
            limit=limit,
        )
        data = [
            PublicCatalogItem(
                id=p.id,
                internal_sku=p.sku,
                name=p.name,
                category_id=p.category_id,
                min_price=p.price,
                max_price=p.price,
                supplier_count=0,
            )
            for p in rows
        ]
        return PublicCatalog(total_count=total, page=page, limit=limit, data=data).model_dump_json().encode()

    key = f"catalog:{page}:{limit}:{category_id}:{min_price}:{max_price}:{search}"
    return json_response(request, await cache.cached(services, key, build))


# --- categories -----------------------------------------------------------------------------------------------


@router.get("/categories", response_model=Page[CategoryRead], summary="List categories")
async def list_categories(session: SessionDep, tree: bool = False) -> Page[CategoryRead]:
    """Flat by position, or nested with `?tree=true` (roots in `data`, each with `children`)."""
    items = (
        await categories.tree(session)
        if tree
        else [CategoryRead.model_validate(c) for c in await categories.flat(session)]
    )
    return Page[CategoryRead](
        data=items,
        pagination={
            "page": 1,
            "limit": max(len(items), 1),
            "total": len(items),
            "total_pages": 1 if items else 0,
        },
    )


@router.get("/categories/deleted", response_model=Page[CategoryRead], summary="List deleted categories")
async def deleted_categories(session: SessionDep, _: Admin) -> Page[CategoryRead]:
    """Admin only."""
    items = [CategoryRead.model_validate(c) for c in await categories.flat(session, deleted=True)]
    return Page[CategoryRead](
        data=items,
        pagination={
            "page": 1,
            "limit": max(len(items), 1),
            "total": len(items),
            "total_pages": 1 if items else 0,
        },
    )


@router.post(
    "/categories",
    status_code=status.HTTP_201_CREATED,
    response_model=CategoryRead,
    responses=problems(DuplicateValue),
    summary="Create a category",
)
async def create_category(body: CategoryCreate, session: SessionDep, _: Admin) -> CategoryRead:
    """Admin only; `parent_id` places it in the tree."""
    return CategoryRead.model_validate(await categories.create(session, body))


@router.get(
    "/categories/{category_id}",
    response_model=CategoryRead,
    responses=problems(CategoryNotFound),
    summary="Get a category",
)
async def get_category(category_id: str, session: SessionDep) -> CategoryRead:
    """By id or slug."""
    return CategoryRead.model_validate(await categories.get(session, category_id))


@router.patch(
    "/categories/{category_id}",
    response_model=CategoryRead,
    responses=problems(CategoryNotFound, CategoryCycle, DuplicateValue),
    summary="Update a category",
)
@router.put("/categories/{category_id}", response_model=CategoryRead, include_in_schema=False)
async def update_category(category_id: str, body: CategoryUpdate, session: SessionDep, _: Admin) -> CategoryRead:
    """Moving a category under itself or a descendant is a 409."""
    return CategoryRead.model_validate(await categories.update(session, category_id, body))


@router.delete(
    "/categories/{category_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(CategoryNotFound, CategoryInUse),
    summary="Delete a category (soft)",
)
async def delete_category(
    category_id: str,
    session: SessionDep,
    _: Admin,
    reassign_to: Annotated[str | None, Query(max_length=300)] = None,
) -> None:
    """Deletes the subtree too. A category with products is a 409 unless `?reassign_to=` names where they go."""
    await categories.delete(session, category_id, reassign_to=reassign_to)


@router.post(
    "/categories/{category_id}/restore",
    response_model=CategoryRead,
    responses=problems(CategoryNotFound),
    summary="Restore a deleted category",
)
async def restore_category(category_id: str, session: SessionDep, _: Admin) -> CategoryRead:
    """Admin only. Brings back the subcategories deleted together with it (not those deleted on their own before);
    a category whose parent is still deleted comes back as a root."""
    return CategoryRead.model_validate(await categories.restore(session, category_id))


# --- attributes -----------------------------------------------------------------------------------------------


@router.get("/attributes", response_model=Page[AttributeRead], summary="List attributes")
async def list_attributes(
    request: Request, response: Response, session: SessionDep, paging: PageDep
) -> Page[AttributeRead]:
    """Attribute definitions with their allowed values."""
    found = await categories.list_attributes(session, page=paging.page, limit=paging.limit)
    response.headers.update(link_header(request, paging.page, paging.limit, found.total))
    return envelope(AttributeRead, found)


@router.post(
    "/attributes",
    status_code=status.HTTP_201_CREATED,
    response_model=AttributeRead,
    responses=problems(DuplicateValue),
    summary="Create an attribute",
)
async def create_attribute(body: AttributeCreate, session: SessionDep, _: Admin) -> AttributeRead:
    """Admin only."""
    return await categories.create_attribute(session, body)


@router.get("/attributes/{attribute_id}/values", response_model=AttributeRead, summary="An attribute's values")
async def attribute_values(attribute_id: uuid.UUID, session: SessionDep) -> AttributeRead:
    """The attribute with its allowed values."""
    return await categories.values_of(session, attribute_id)


@router.post(
    "/attributes/{attribute_id}/values",
    status_code=status.HTTP_201_CREATED,
    response_model=AttributeRead,
    responses=problems(DuplicateValue),
    summary="Add an allowed value",
)
async def add_attribute_value(
    attribute_id: uuid.UUID, body: AttributeValueCreate, session: SessionDep, _: Admin
) -> AttributeRead:
    """Admin only; returns the attribute with all its values."""
    return await categories.add_value(session, attribute_id, body.value)
