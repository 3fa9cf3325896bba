"""Catalog use cases: products and variants (create, update, soft delete, restore), reading them with stock,
and the bulk endpoint. Categories and attributes live in :mod:`mercato.catalog.categories`.

Functions take the request's session and never commit. Every write makes cached catalog reads stale after commit.
Vendors act on their own products only: a vendor's products carry ``vendor_id`` = the vendor user's id.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.audit import service as audit_service
from mercato.catalog import cache, repository, rules, search
from mercato.catalog.errors import BulkFailed, DuplicateValue, ProductNotFound, UnknownCategory, VariantInUse
from mercato.catalog.models import Product, ProductStatus, ProductVariant
from mercato.catalog.schemas import (
    CategoryRef,
    ImageRead,
    ProductCreate,
    ProductRead,
    ProductUpdate,
    VariantCreate,
    VariantRead,
    VariantUpdate,
    page_json,
)
from mercato.db.queries import Paged, add_unique
from mercato.errors import DomainError, Forbidden, NotFound, ValidationFailed
from mercato.identity.models import Role
from mercato.identity.principal import Principal
from mercato.inventory import service as inventory_service
from mercato.platform import clock
from mercato.platform.context import services_of

MAX_BULK = 500
_INSERT_ATTEMPTS = 3  # a generated slug taken by concurrent creations is made again this many times at most

# --- reading --------------------------------------------------------------------------------------------------


def can_manage(principal: Principal | None) -> bool:
    """Admins and vendors may write products (vendors only their own)."""
    return principal is not None and principal.may(Role.vendor)


def sees_all_statuses(principal: Principal | None) -> bool:
    """Admins (and staff who work on the catalog) see draft, inactive and archived products."""
    return principal is not None and principal.may(Role.sales, Role.procurement)


async def present(session: AsyncSession, products: Sequence[Product]) -> list[ProductRead]:
    """Shape products as :class:`ProductRead` with stock from the inventory (one query for all of them)."""
    levels = await inventory_service.levels(session, [p.id for p in products])
    currency = services_of(session).settings.currency
    return [_read(p, levels, currency) for p in products]


def _read(product: Product, levels: dict[tuple[uuid.UUID, uuid.UUID | None], Any], currency: str) -> ProductRead:
    variants = []
    for v in product.variants:
        level = levels.get((product.id, v.id))
        variants.append(
            VariantRead(
                id=v.id,
                product_id=product.id,
                sku=v.sku,
                name=v.name,
                options=v.options,
                price_modifier=v.price_modifier,
                price=rules.variant_price(product.price, v.price_modifier),
                stock=max(0, level.available) if level else 0,
                image_url=v.image_url,
            )
        )
    own = levels.get((product.id, None))
    stock = rules.product_stock(own.available if own else 0, (v.stock for v in variants), bool(variants))
    category = product.category
    return ProductRead(
        id=product.id,
        name=product.name,
        slug=product.slug,
        description=product.description,
        sku=product.sku,
        price=product.price,
        compare_at_price=product.compare_at_price,
        currency=currency,
        status=ProductStatus(product.status),
        category_id=product.category_id,
        category=CategoryRef(id=category.id, name=category.name, slug=category.slug) if category else None,
        vendor_id=product.vendor_id,
        brand=product.brand,
        attributes=product.attributes,
        specifications=product.specifications,
        tags=product.tags,
        images=[ImageRead.model_validate(i) for i in product.images],
        variants=variants,
        stock=stock,
        in_stock=stock > 0,
        rating_average=product.rating_average,
        rating_count=product.rating_count,
        weight_grams=product.weight_grams,
        created_at=product.created_at,
        updated_at=product.updated_at,
    )


async def get_product(
    session: AsyncSession, principal: Principal | None, id_or_slug: str, *, lock: bool = False
) -> Product:
    """A product visible to the caller (only ``active`` ones for the public and customers).

    ``lock=True`` (in a write transaction) takes the product's row lock first (``FOR UPDATE`` on PostgreSQL;
    SQLite's write transaction already excludes other writers), for a caller that compares the product before
    changing it (``If-Match``): a concurrent change then waits, or is seen.

    Raises:
        ProductNotFound: no such live product, or it is not visible to the caller.
    """
    product = await repository.product(session, id_or_slug, for_update=lock)
    if product is None or not _visible(principal, product):
        raise ProductNotFound(f"No product {id_or_slug!r}.")
    return product


def _visible(principal: Principal | None, product: Product) -> bool:
    if product.status == ProductStatus.active or sees_all_statuses(principal):
        return True
    return principal is not None and principal.role is Role.vendor and product.vendor_id == principal.user_id


async def listing(
    session: AsyncSession, filters: repository.ProductFilter, *, sort: str, page: int, limit: int
) -> tuple[bytes, int]:
    """A page of products as the JSON of ``Page[ProductRead]``, from one statement that serialises the products
    and counts all matching ones.

    Args:
        session: any session.
        filters: the list filters.
        sort: a key of ``repository.SORTS``, ``-`` in front for descending.
        page: 1-based page number.
        limit: products per page.

    Returns:
        The JSON body and the total number of matching products (for the ``Link`` header).
    """
    currency = services_of(session).settings.currency
    rows = await repository.listed_rows(session, filters, sort=sort, page=page, limit=limit, currency=currency)
    if rows:
        total = int(rows[0]["total"])
    elif page == 1:
        total = 0
    else:  # past the last page: no row carries the count
        total = await repository.count_products(session, filters)
    return page_json([row["json"] for row in rows], total, page, limit), total


async def listing_of(
    session: AsyncSession,
    filters: repository.ProductFilter,
    ids: Sequence[uuid.UUID],
    *,
    total: int | None,
    page: int,
    limit: int,
) -> tuple[bytes, int]:
    """The products ``ids`` that still match ``filters``, in the order of ``ids``, as the JSON of
    ``Page[ProductRead]`` (search results, similar products).

    Args:
        session: any session.
        filters: the list filters the products must still match (``ids`` is replaced).
        ids: the products wanted, in order.
        total: the total to report in the envelope; None for the number of products found.
        page: the envelope's 1-based page number.
        limit: the envelope's page size.

    Returns:
        The JSON body and the total it reports.
    """
    rows: Sequence[Any] = []
    if ids:
        found = await repository.listed_rows(
            session,
            replace(filters, ids=ids),
            sort="name",
            page=1,
            limit=len(ids),
            currency=services_of(session).settings.currency,
            counted=False,
        )
        position = {product_id: index for index, product_id in enumerate(ids)}
        rows = sorted(found, key=lambda row: position[row["id"]])
    total = len(rows) if total is None else total
    return page_json([row["json"] for row in rows], total, page, limit), total


async def category_filter(session: AsyncSession, category_id: str | None) -> set[uuid.UUID] | None:
    """The category and all its descendants, for ``?category_id=`` (API.md: includes subcategories).

    Raises:
        NotFound: no such category.
    """
    if category_id is None:
        return None
    category = await repository.category(session, category_id)
    if category is None:
        raise NotFound(f"No category {category_id!r}.")
    return rules.descendants(category.id, await repository.category_parents(session))


# --- writing --------------------------------------------------------------------------------------------------


async def create_product(session: AsyncSession, principal: Principal, body: ProductCreate) -> Product:
    """Create a product with its variants and stock rows.

    A slug made from the name that a concurrent creation takes first is made again (``-2``...); a SKU or a given
    slug taken that way is a 409 like one taken before.

    Raises:
        Forbidden: the caller may not manage products.
        UnknownCategory: ``category_id`` names no live category (422, field ``category_id``).
        DuplicateValue: the SKU (of the product or a variant) or the slug is taken (409).
    """
    _require_manager(principal)
    await _check_category(session, body.category_id)
    skus = [s for s in [body.sku, *(v.sku for v in body.variants)] if s]
    _no_repeats(skus)
    await _check_skus(session, skus)
    if body.slug is not None and await repository.slug_taken(session, Product, body.slug):
        raise DuplicateValue(f"The slug {body.slug!r} is already used.")
    now = clock.now()
    product = Product(
        id=clock.new_id(),
        name=body.name,
        slug=body.slug or await _free_slug(session, body.name),
        description=body.description,
        sku=body.sku,
        price=body.price,
        compare_at_price=body.compare_at_price,
        status=body.status,
        category_id=body.category_id,
        brand=body.brand,
        attributes=body.attributes,
        specifications=body.specifications,
        tags=body.tags,
        weight_grams=body.weight_grams,
        vendor_id=principal.user_id if principal.role is Role.vendor else None,
        rating_average=Decimal("0"),
        rating_count=0,
        units_sold_30d=0,
        created_at=now,
        updated_at=now,
        variants=[],
        images=[],
    )
    variants = [_new_variant(product, spec, position) for position, spec in enumerate(body.variants)]
    # rows exist before their stock rows reference them
    for _ in range(_INSERT_ATTEMPTS):
        if await add_unique(session, product):
            break
        await _check_skus(session, skus)  # a concurrent creation took them: the 409 names them
        if body.slug is not None:
            raise DuplicateValue(f"The slug {body.slug!r} is already used.")
        product.slug = await _free_slug(session, body.name)
    else:
        raise DuplicateValue("The generated slug was taken by concurrent creations; try again.")
    for variant, spec in zip(variants, body.variants, strict=True):
        _stock_row(session, product, variant, spec)
    if not body.variants:
        inventory_service.create_item(
            session,
            product_id=product.id,
            variant_id=None,
            sku=body.sku,
            on_hand=body.stock,
            reorder_point=body.reorder_point,
        )
    await session.flush()
    await search.reindex(session, [product.id])
    cache.invalidate_after_commit(session)
    return await repository.reload(session, product)


def _new_variant(product: Product, spec: VariantCreate, position: int, *, attach: bool = True) -> ProductVariant:
    now = clock.now()
    variant = ProductVariant(
        id=clock.new_id(),
        product_id=product.id,
        sku=spec.sku,
        name=spec.name,
        options=spec.options,
        price_modifier=spec.price_modifier,
        image_url=spec.image_url,
        position=position,
        created_at=now,
        updated_at=now,
    )
    if attach:  # else the caller inserts it (the product's variants are re-read after)
        product.variants.append(variant)
    return variant


def _stock_row(session: AsyncSession, product: Product, variant: ProductVariant, spec: VariantCreate) -> None:
    inventory_service.create_item(
        session,
        product_id=product.id,
        variant_id=variant.id,
        sku=spec.sku,
        on_hand=spec.stock,
        reorder_point=spec.reorder_point,
    )


async def update_product(session: AsyncSession, principal: Principal, id_or_slug: str, body: ProductUpdate) -> Product:
    """Apply a partial update. ``stock`` sets on-hand units of a product without variants.

    Raises:
        ProductNotFound, Forbidden, UnknownCategory, InsufficientStock.
        DuplicateValue: the SKU or slug is taken, also when a concurrent change took it after the check (409).
    """
    product = await _owned_product(session, principal, id_or_slug)
    changes = body.model_dump(exclude_unset=True)
    for required in ("name", "price", "slug", "status"):
        if required in changes and changes[required] is None:
            raise ValidationFailed(f"{required} cannot be null.", field=required)
    if "category_id" in changes:
        await _check_category(session, changes["category_id"])
    if changes.get("sku"):
        await _check_skus(session, [changes["sku"]], exclude_product=product.id)
    if changes.get("slug") and await repository.slug_taken(session, Product, changes["slug"], exclude=product.id):
        raise DuplicateValue(f"The slug {changes['slug']!r} is already used.")
    stock = changes.pop("stock", None)
    reorder_point = changes.pop("reorder_point", None)
    product_id = product.id  # the row is expired if the savepoint below is rolled back
    if not await repository.apply_unique(session, product, changes):  # a concurrent change took the SKU or slug
        if changes.get("sku"):
            await _check_skus(session, [changes["sku"]], exclude_product=product_id)
        raise DuplicateValue(f"The slug {changes.get('slug')!r} is already used.")
    if stock is not None or reorder_point is not None or "sku" in changes:
        if product.variants and stock is not None:
            raise ValidationFailed("This product has variants; set stock on each variant.", field="stock")
        if not product.variants:
            await inventory_service.set_stock(
                session,
                product_id=product.id,
                variant_id=None,
                on_hand=stock,
                reorder_point=reorder_point,
                sku=product.sku,
            )
    product.updated_at = clock.now()
    await session.flush()
    await search.reindex(session, [product.id])
    cache.invalidate_after_commit(session)
    return await repository.reload(session, product)


async def delete_product(session: AsyncSession, principal: Principal, id_or_slug: str) -> None:
    """Soft-delete: the product vanishes from public reads and can be restored by an admin."""
    product = await _owned_product(session, principal, id_or_slug)
    product.deleted_at = clock.now()
    product.updated_at = product.deleted_at
    audit_service.record(session, "product.deleted", "product", product.id, {"name": product.name})
    await search.reindex(session, [product.id])
    cache.invalidate_after_commit(session)


async def restore_product(session: AsyncSession, id_or_slug: str) -> Product:
    """Bring back a soft-deleted product (admin).

    A product whose category was deleted meanwhile comes back without a category (``category_id`` null), as a
    restored category whose parent is deleted comes back as a root (API.md: a live product is never in a deleted
    category; deleting one with products needs ``reassign_to``). The audit entry names the category it left.

    Raises:
        ProductNotFound: no deleted product with that id or slug.
    """
    product = await repository.product(session, id_or_slug, deleted=True)
    if product is None:
        raise ProductNotFound(f"No deleted product {id_or_slug!r}.")
    details: dict[str, Any] = {"name": product.name}
    if product.category_id is not None and await repository.category(session, product.category_id) is None:
        details["category_cleared"] = str(product.category_id)
        product.category_id = None
    product.deleted_at = None
    product.updated_at = clock.now()
    audit_service.record(session, "product.restored", "product", product.id, details)
    await search.reindex(session, [product.id])
    cache.invalidate_after_commit(session)
    return await repository.reload(session, product)


async def deleted_products(session: AsyncSession, *, page: int, limit: int) -> Paged[ProductRead]:
    """Soft-deleted products (admin)."""
    found = await repository.deleted_products(session, page=page, limit=limit)
    return Paged(await present(session, found.items), found.total, page, limit)


async def add_variant(session: AsyncSession, principal: Principal, id_or_slug: str, body: VariantCreate) -> Product:
    """Add a variant (with its stock row) to a product.

    Raises:
        ProductNotFound, Forbidden.
        DuplicateValue: the SKU is taken, also when a concurrent request took it after the check (409).
    """
    product = await _owned_product(session, principal, id_or_slug)
    await _check_skus(session, [body.sku])
    variant = _new_variant(product, body, len(product.variants), attach=False)
    product.updated_at = clock.now()
    if not await add_unique(session, variant):  # a concurrent request took the SKU
        raise DuplicateValue(f"SKU already used: {body.sku}.")
    _stock_row(session, product, variant, body)
    await session.flush()
    cache.invalidate_after_commit(session)
    return await repository.reload(session, product)


async def update_variant(
    session: AsyncSession, principal: Principal, id_or_slug: str, variant_id: uuid.UUID, body: VariantUpdate
) -> Product:
    """Partially update a variant; ``stock`` sets its on-hand units.

    Raises:
        ProductNotFound, Forbidden, NotFound (no such variant of the product).
        DuplicateValue: the SKU is taken, also when a concurrent change took it after the check (409).
    """
    product = await _owned_product(session, principal, id_or_slug)
    variant = next((v for v in product.variants if v.id == variant_id), None)
    if variant is None:
        raise NotFound("No such variant.")
    changes = body.model_dump(exclude_unset=True)
    if changes.get("sku"):
        await _check_skus(session, [changes["sku"]], exclude_variant=variant.id)
    stock = changes.pop("stock", None)
    product.updated_at = now = clock.now()
    kept = {name: value for name, value in changes.items() if value is not None}
    if not await repository.apply_unique(session, variant, {**kept, "updated_at": now}):
        raise DuplicateValue(f"SKU already used: {changes.get('sku')}.")  # a concurrent change took it
    if stock is not None or "sku" in changes:
        await inventory_service.set_stock(
            session, product_id=product.id, variant_id=variant.id, on_hand=stock, sku=variant.sku
        )
    await session.flush()
    cache.invalidate_after_commit(session)
    return await repository.reload(session, product)


async def delete_variant(session: AsyncSession, principal: Principal, id_or_slug: str, variant_id: uuid.UUID) -> None:
    """Remove a variant and its stock row.

    Raises:
        NotFound: no such variant of the product.
        VariantInUse: an order with a line of the variant is not finished (pending, processing or shipped: its
            payment, cancellation, expiry or shipping still moves the variant's stock, through its stock row);
            409, allowed again once every such order is delivered, cancelled or returned.
    """
    product = await _owned_product(session, principal, id_or_slug)
    variant = next((v for v in product.variants if v.id == variant_id), None)
    if variant is None:
        raise NotFound("No such variant.")
    # imported here: orders import the cart, which imports catalog units, inventory and this module
    from mercato.orders import service as orders_service

    unfinished = await orders_service.unfinished_orders_with_variant(session, product.id, variant_id, limit=6)
    if unfinished:
        named = ", ".join(unfinished[:5]) + (", ..." if len(unfinished) > 5 else "")
        raise VariantInUse(
            f"Orders not yet delivered or cancelled have lines of this variant ({named}); delete it once they are "
            "delivered, cancelled or returned."
        )
    product.variants.remove(variant)
    product.updated_at = clock.now()
    await session.flush()
    cache.invalidate_after_commit(session)


async def bulk(session: AsyncSession, principal: Principal, operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run up to 500 ``create``/``update``/``delete`` operations all-or-nothing.

    Each operation is ``{"op": "create", "data": {...}}``, ``{"op": "update", "id": ..., "data": {...}}`` or
    ``{"op": "delete", "id": ...}``. Returns ``[{index, op, id}]``. Raises:
        BulkFailed: with ``errors: [{index, status, type, detail}]`` for every failing operation; the caller's
        transaction is rolled back so nothing is written.
    """
    _require_manager(principal)
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for index, operation in enumerate(operations):
        try:
            results.append(
                {
                    "index": index,
                    "op": operation["op"],
                    "id": str(await _run_operation(session, principal, operation)),
                }
            )
        except ValidationError as exc:
            errors.append(
                {
                    "index": index,
                    "status": 422,
                    "type": "validation-error",
                    "detail": "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
                }
            )
        except DomainError as exc:
            errors.append({"index": index, "status": exc.status, "type": exc.code, "detail": exc.detail})
    if errors:
        raise BulkFailed(f"{len(errors)} of {len(operations)} operations failed; nothing was changed.", errors=errors)
    return results


async def _run_operation(session: AsyncSession, principal: Principal, operation: dict[str, Any]) -> uuid.UUID:
    op = operation["op"]
    if op == "create":
        product = await create_product(session, principal, ProductCreate.model_validate(operation.get("data") or {}))
        return product.id
    target = str(operation.get("id") or "")
    if op == "update":
        product = await update_product(
            session, principal, target, ProductUpdate.model_validate(operation.get("data") or {})
        )
        return product.id
    product = await _owned_product(session, principal, target)
    await delete_product(session, principal, target)
    return product.id


# --- helpers --------------------------------------------------------------------------------------------------


def _require_manager(principal: Principal) -> None:
    if not can_manage(principal):
        raise Forbidden("Only admins and vendors may change products.")


async def _owned_product(session: AsyncSession, principal: Principal, id_or_slug: str) -> Product:
    _require_manager(principal)
    product = await repository.product(session, id_or_slug)
    if product is None:
        raise ProductNotFound(f"No product {id_or_slug!r}.")
    if not principal.is_admin and product.vendor_id != principal.user_id:
        raise ProductNotFound(f"No product {id_or_slug!r}.")
    return product


async def _check_category(session: AsyncSession, category_id: uuid.UUID | None) -> None:
    if category_id is not None and await repository.category(session, category_id) is None:
        raise UnknownCategory(f"No category {category_id}.", field="category_id")


def _no_repeats(skus: list[str]) -> None:
    seen: set[str] = set()
    for sku in skus:
        if sku in seen:
            raise DuplicateValue(f"The SKU {sku!r} appears twice in this product.")
        seen.add(sku)


async def _check_skus(
    session: AsyncSession,
    skus: list[str],
    *,
    exclude_product: uuid.UUID | None = None,
    exclude_variant: uuid.UUID | None = None,
) -> None:
    taken = await repository.skus_taken(session, skus, exclude_product=exclude_product, exclude_variant=exclude_variant)
    if taken:
        raise DuplicateValue(f"SKU already used: {', '.join(sorted(taken))}.")


async def _free_slug(session: AsyncSession, name: str) -> str:
    base = rules.slugify(name)
    taken = await repository.slugs_like(session, Product, base)
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


async def owned_product(session: AsyncSession, principal: Principal, id_or_slug: str) -> Product:
    """A live product the caller may change: any product for admins, their own for vendors (variants, images
    and category loaded). Used by the other catalog use-case modules (images).

    Raises:
        Forbidden: the caller is neither an admin nor a vendor.
        ProductNotFound: no live product with that id or slug, or a vendor asks for another vendor's product.
    """
    return await _owned_product(session, principal, id_or_slug)
