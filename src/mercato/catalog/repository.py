"""Every catalog query. Relationships are loaded explicitly (``lazy="raise"`` everywhere); a page of products is
one statement whatever its size (:func:`listed_rows`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    RowMapping,
    Select,
    String,
    bindparam,
    case,
    exists,
    func,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.sql.elements import ColumnElement

from mercato.catalog.models import (
    Attribute,
    AttributeValue,
    Category,
    Product,
    ProductImage,
    ProductStatus,
    ProductVariant,
)
from mercato.db.json_sql import JsonSql, sql_constant
from mercato.db.queries import Paged, paged
from mercato.inventory.models import InventoryItem

SORTS: dict[str, Any] = {
    "price": Product.price,
    "rating": Product.rating_average,
    "popularity": Product.units_sold_30d,
    "created_at": Product.created_at,
    "name": Product.name,
}


@dataclass(frozen=True)
class ProductFilter:
    """Filters of ``GET /products``; ``category_ids`` already holds the category and its descendants."""

    category_ids: set[uuid.UUID] | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    q: str | None = None
    brand: str | None = None
    vendor_id: uuid.UUID | None = None
    in_stock: bool | None = None
    statuses: tuple[str, ...] = (ProductStatus.active,)
    ids: Sequence[uuid.UUID] | None = None


def _with_relations(query: Select[Any]) -> Select[Any]:
    return query.options(selectinload(Product.variants), selectinload(Product.images), joinedload(Product.category))


async def reload(session: AsyncSession, product: Product) -> Product:
    """Re-read ``product`` (flushed) with variants, images and category loaded."""
    await session.flush()
    query = _with_relations(select(Product).where(Product.id == product.id))
    found: Product = (await session.execute(query.execution_options(populate_existing=True))).unique().scalar_one()
    return found


async def product(
    session: AsyncSession, id_or_slug: str | uuid.UUID, *, deleted: bool = False, for_update: bool = False
) -> Product | None:
    """A product by id, else by slug (API.md: ``{id}`` is tried as an id first), with variants, images and
    category loaded. ``deleted`` selects soft-deleted products instead of live ones."""
    condition = Product.deleted_at.is_not(None) if deleted else Product.deleted_at.is_(None)
    product_id = _as_uuid(id_or_slug)
    query = _with_relations(select(Product).where(condition))
    if for_update:
        query = query.with_for_update(of=Product)
    found: Product | None = None
    if product_id is not None:
        found = (await session.execute(query.where(Product.id == product_id))).unique().scalar_one_or_none()
    if found is None:
        found = (await session.execute(query.where(Product.slug == str(id_or_slug)))).unique().scalar_one_or_none()
    return found


def _as_uuid(value: str | uuid.UUID) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


#: Which filters a query uses (not their values): ids, categories, min price, max price, brand, vendor, q, in
#: stock (None, True or False). Statements are built once per shape and sort, with their values as bind
#: parameters: SQLAlchemy then reuses the statement's compiled form without rebuilding or re-keying it (building
#: one costs more CPU than running it on a page of 20).
_Shape = tuple[bool, bool, bool, bool, bool, bool, bool, bool | None]


def _shape(filters: ProductFilter) -> _Shape:
    return (
        filters.ids is not None,
        filters.category_ids is not None,
        filters.min_price is not None,
        filters.max_price is not None,
        bool(filters.brand),
        bool(filters.vendor_id),
        bool(filters.q),
        filters.in_stock,
    )


def filter_params(filters: ProductFilter) -> dict[str, Any]:
    """The bind parameters of :func:`filtered`'s statement for ``filters``."""
    return {
        "statuses": list(filters.statuses),
        "ids": list(filters.ids or ()),
        "category_ids": list(filters.category_ids or ()),
        "min_price": filters.min_price,
        "max_price": filters.max_price,
        "brand": (filters.brand or "").lower(),
        "vendor_id": filters.vendor_id,
        "like": f"%{_escape_like((filters.q or '').lower())}%",
    }


def filtered(filters: ProductFilter) -> Select[Any]:
    """``SELECT products`` of the live products matching ``filters``' shape; run it with
    :func:`filter_params` ``(filters)``. The statement is built once per shape (see ``_Shape``)."""
    return _filtered(_shape(filters))


@lru_cache(maxsize=256)
def _filtered(shape: _Shape) -> Select[Any]:
    ids, categories, min_price, max_price, brand, vendor, q, in_stock = shape
    query = select(Product).where(
        Product.deleted_at.is_(None), Product.status.in_(bindparam("statuses", expanding=True))
    )
    if ids:
        query = query.where(Product.id.in_(bindparam("ids", expanding=True)))
    if categories:
        query = query.where(Product.category_id.in_(bindparam("category_ids", expanding=True)))
    if min_price:
        query = query.where(Product.price >= bindparam("min_price", type_=Product.price.type))
    if max_price:
        query = query.where(Product.price <= bindparam("max_price", type_=Product.price.type))
    if brand:
        query = query.where(func.lower(Product.brand) == bindparam("brand"))
    if vendor:
        query = query.where(Product.vendor_id == bindparam("vendor_id", type_=Product.vendor_id.type))
    if q:
        like: BindParameter[str] = bindparam("like")
        query = query.where(
            or_(
                func.lower(Product.name).like(like, escape="\\"),
                func.lower(Product.brand).like(like, escape="\\"),
            )
        )
    if in_stock is not None:
        available = exists().where(
            InventoryItem.product_id == Product.id,
            InventoryItem.on_hand - InventoryItem.reserved > 0,
            # a product with variants is in stock through its variants only
            or_(
                InventoryItem.variant_id.is_not(None),
                # correlated to the listed product explicitly: nested in another EXISTS, SQLAlchemy would
                # otherwise add its own FROM products and ask whether *any* product has variants
                ~exists().where(ProductVariant.product_id == Product.id).correlate(Product),
            ),
        )
        query = query.where(available if in_stock else ~available)
    return query


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


#: Order of a product's images and variants.
_BY_POSITION: dict[Any, tuple[Any, ...]] = {
    model: (model.position, model.id) for model in (ProductImage, ProductVariant)
}


def _product_json(dialect: str) -> ColumnElement[Any]:
    """A listed product (of the enclosing query's ``products`` and ``categories`` rows) as the JSON text of
    :class:`~mercato.catalog.schemas.ProductRead`: same fields in the same order, same formats. The store currency
    is the bind parameter ``currency``. Built by the database (see :mod:`mercato.db.json_sql`)."""
    j = JsonSql(dialect)
    zero = sql_constant(0)
    available = InventoryItem.on_hand - InventoryItem.reserved
    of_variant = select(available).where(InventoryItem.variant_id == ProductVariant.id).scalar_subquery()
    variant_stock = j.greatest(func.coalesce(of_variant, zero), zero)
    variant = j.object(
        ("id", j.uuid(ProductVariant.id)),
        ("product_id", j.uuid(ProductVariant.product_id)),
        ("sku", ProductVariant.sku),
        ("name", ProductVariant.name),
        ("options", j.embedded(ProductVariant.options)),
        ("price_modifier", j.money(ProductVariant.price_modifier)),
        ("price", j.money(j.greatest(Product.price + ProductVariant.price_modifier, zero))),  # rules.variant_price
        ("stock", variant_stock),
        ("image_url", ProductVariant.image_url),
    )
    image = j.object(
        ("id", j.uuid(ProductImage.id)),
        *(
            (name, getattr(ProductImage, name))
            for name in ("url", "thumbnail_url", "alt", "position", "width", "height")
        ),
    )
    # rules.product_stock: the sum over its variants when it has some (never NULL then), else its own row's
    own = select(j.greatest(available, zero)).where(
        InventoryItem.product_id == Product.id, InventoryItem.variant_id.is_(None)
    )
    variants_stock = select(func.sum(variant_stock)).where(ProductVariant.product_id == Product.id)
    stock = func.coalesce(variants_stock.scalar_subquery(), own.scalar_subquery(), zero)
    category = j.object(("id", j.uuid(Category.id)), ("name", Category.name), ("slug", Category.slug))
    return j.object(
        ("id", j.uuid(Product.id)),
        ("name", Product.name),
        ("slug", Product.slug),
        ("description", Product.description),
        ("sku", Product.sku),
        ("price", j.money(Product.price)),
        ("compare_at_price", j.money(Product.compare_at_price)),
        ("currency", bindparam("currency", type_=String)),
        ("status", Product.status),
        ("category_id", j.uuid(Product.category_id)),
        ("category", j.embedded(case((Category.id.is_(None), null()), else_=category))),
        ("vendor_id", j.uuid(Product.vendor_id)),
        ("brand", Product.brand),
        ("attributes", j.embedded(Product.attributes)),
        ("specifications", j.embedded(Product.specifications)),
        ("tags", j.embedded(Product.tags)),
        (
            "images",
            j.array(image, ProductImage.product_id == Product.id, (ProductImage.position, ProductImage.id), Product),
        ),
        (
            "variants",
            j.array(
                variant, ProductVariant.product_id == Product.id, (ProductVariant.position, ProductVariant.id), Product
            ),
        ),
        ("stock", stock),
        ("in_stock", j.boolean(stock > zero)),
        ("rating_average", j.decimal2(Product.rating_average)),
        ("rating_count", Product.rating_count),
        ("weight_grams", Product.weight_grams),
        ("created_at", j.instant(Product.created_at)),
        ("updated_at", j.instant(Product.updated_at)),
    )


@lru_cache(maxsize=256)
def _listed(shape: _Shape, sort: str, dialect: str, counted: bool) -> Select[Any]:
    """One statement for a whole page: the page's ids are chosen first (filters, order, limit), then each is
    joined to its row and category and serialised, so the JSON is built for the page's rows only whatever the
    order needs (SQLite would otherwise build it for every row it sorts)."""
    column = SORTS[sort.lstrip("-")]
    descending = sort.startswith("-")
    if shape[0]:
        # given ids: look them up by primary key, then apply the other filters to those. SQLite, without table
        # statistics, would take ``status IN (...)`` for the most selective term and walk every live product.
        # The LIMIT keeps it from merging this subquery into the outer query.
        ids = select(Product.id).where(Product.id.in_(bindparam("ids", expanding=True)))
        where = _filtered((False, *shape[1:])).whereclause
    else:
        ids, where = _filtered(shape).with_only_columns(Product.id).order_by(*_order(column, descending)), None
    chosen = ids.limit(bindparam("limit")).offset(bindparam("offset")).subquery("page")
    columns: list[Any] = [Product.id, JsonSql(dialect).text(_product_json(dialect)).label("json")]
    if counted:  # not correlated: counted once per statement, over the whole filtered set
        columns.append(_counted(shape).correlate(None).scalar_subquery().label("total"))
    query = (
        select(*columns)
        .select_from(chosen)
        .join(Product, Product.id == chosen.c.id)
        .outerjoin(Category, Category.id == Product.category_id)
        .order_by(*_order(column, descending))
    )
    return query if where is None else query.where(where)


def _order(column: Any, descending: bool) -> list[Any]:
    return [column.desc(), Product.id.desc()] if descending else [column.asc(), Product.id.asc()]


@lru_cache(maxsize=256)
def _counted(shape: _Shape) -> Select[Any]:
    return _filtered(shape).with_only_columns(func.count()).select_from(Product)


async def listed_rows(
    session: AsyncSession,
    filters: ProductFilter,
    *,
    sort: str,
    page: int,
    limit: int,
    currency: str,
    counted: bool = True,
) -> Sequence[RowMapping]:
    """One page of products matching ``filters``, serialised by the database, in one statement.

    Args:
        session: any session.
        filters: the list filters.
        sort: a key of :data:`SORTS`, ``-`` in front for descending; ties are broken by id.
        page: 1-based page number.
        limit: rows per page.
        currency: the store currency (ISO 4217) shown on every product.
        counted: add the number of products matching ``filters`` (all pages) to every row as ``total``.

    Returns:
        Row mappings: ``id`` (UUID), ``json`` (the product as the JSON text of ``ProductRead``), and ``total``
        when ``counted``.

    Raises:
        ValueError: ``filters.ids`` with ``page`` other than 1 or ``limit`` below the number of ids.
    """
    if filters.ids is not None and (page != 1 or limit < len(filters.ids)):
        # the given ids are picked before they are filtered and ordered: only the whole set makes sense
        raise ValueError("given ids are listed as one page (page 1, limit ≥ len(ids))")
    params = filter_params(filters) | {"limit": limit, "offset": (page - 1) * limit, "currency": currency}
    query = _listed(_shape(filters), sort, session.get_bind().dialect.name, counted)
    # through the session's connection: a Core statement needs none of the ORM's result machinery
    connection = await session.connection()
    rows: Sequence[RowMapping] = (await connection.execute(query, params)).mappings().all()
    return rows


async def count_products(session: AsyncSession, filters: ProductFilter) -> int:
    """How many products match ``filters``."""
    return int(await session.scalar(_counted(_shape(filters)), filter_params(filters)) or 0)


async def deleted_products(session: AsyncSession, *, page: int, limit: int) -> Paged[Product]:
    """Soft-deleted products, most recently deleted first."""
    query = _with_relations(select(Product).where(Product.deleted_at.is_not(None)))
    total = await session.scalar(select(func.count()).select_from(Product).where(Product.deleted_at.is_not(None)))
    rows = (
        (await session.execute(query.order_by(Product.deleted_at.desc()).limit(limit).offset((page - 1) * limit)))
        .unique()
        .scalars()
        .all()
    )
    return Paged(rows, int(total or 0), page, limit)


async def slug_taken(
    session: AsyncSession,
    model: type[Product] | type[Category],
    slug: str,
    *,
    exclude: uuid.UUID | None = None,
) -> bool:
    """True when a row of ``model`` (deleted ones included) uses ``slug``."""
    query = select(model.id).where(model.slug == slug)
    if exclude is not None:
        query = query.where(model.id != exclude)
    return (await session.scalar(query.limit(1))) is not None


async def apply_unique(
    session: AsyncSession, row: Product | Category | ProductVariant, changes: dict[str, Any]
) -> bool:
    """Set ``changes`` (column name → value) on ``row`` and flush them in a savepoint.

    Returns:
        False when a unique constraint (slug, SKU) refused them: a concurrent request took the value after this
        one checked (PostgreSQL). Only the savepoint is rolled back (``row`` is expired, back to its stored
        values) and the transaction can go on.
    """
    try:
        async with session.begin_nested():
            for name, value in changes.items():
                setattr(row, name, value)
            await session.flush()
    except IntegrityError:
        return False
    return True


async def slugs_like(session: AsyncSession, model: type[Product] | type[Category], base: str) -> set[str]:
    """Slugs equal to ``base`` or ``base-<n>``."""
    rows = await session.execute(select(model.slug).where(or_(model.slug == base, model.slug.like(f"{base}-%"))))
    return set(rows.scalars())


async def skus_taken(
    session: AsyncSession,
    skus: Iterable[str],
    *,
    exclude_product: uuid.UUID | None = None,
    exclude_variant: uuid.UUID | None = None,
) -> set[str]:
    """Which of ``skus`` are already used by a product or a variant (the SKU space is shared)."""
    wanted = list(skus)
    if not wanted:
        return set()
    product_q = select(Product.sku).where(Product.sku.in_(wanted))
    if exclude_product is not None:
        product_q = product_q.where(Product.id != exclude_product)
    variant_q = select(ProductVariant.sku).where(ProductVariant.sku.in_(wanted))
    if exclude_variant is not None:
        variant_q = variant_q.where(ProductVariant.id != exclude_variant)
    found = set((await session.execute(product_q)).scalars()) | set((await session.execute(variant_q)).scalars())
    return {s for s in found if s}


async def variant(session: AsyncSession, product_id: uuid.UUID, variant_id: uuid.UUID) -> ProductVariant | None:
    """The variant ``variant_id`` of ``product_id``."""
    found = await session.get(ProductVariant, variant_id)
    return found if found is not None and found.product_id == product_id else None


async def category_parents(session: AsyncSession) -> dict[uuid.UUID, uuid.UUID | None]:
    """Every live category's parent (the tree is small: one query)."""
    rows = await session.execute(select(Category.id, Category.parent_id).where(Category.deleted_at.is_(None)))
    return {row[0]: row[1] for row in rows}


async def category(session: AsyncSession, id_or_slug: str | uuid.UUID, *, deleted: bool = False) -> Category | None:
    """A category by id or slug."""
    condition = Category.deleted_at.is_not(None) if deleted else Category.deleted_at.is_(None)
    category_id = _as_uuid(id_or_slug)
    if category_id is not None:
        found = (
            await session.execute(select(Category).where(condition, Category.id == category_id))
        ).scalar_one_or_none()
        if found is not None:
            return found
    return (
        await session.execute(select(Category).where(condition, Category.slug == str(id_or_slug)))
    ).scalar_one_or_none()


async def categories(session: AsyncSession, *, deleted: bool = False) -> Sequence[Category]:
    """All live (or all deleted) categories ordered by position then name."""
    condition = Category.deleted_at.is_not(None) if deleted else Category.deleted_at.is_(None)
    return (
        (await session.execute(select(Category).where(condition).order_by(Category.position, Category.name)))
        .scalars()
        .all()
    )


async def products_in_categories(session: AsyncSession, category_ids: Iterable[uuid.UUID]) -> int:
    """How many live products sit directly in these categories."""
    ids = list(category_ids)
    count = await session.scalar(
        select(func.count()).select_from(Product).where(Product.category_id.in_(ids), Product.deleted_at.is_(None))
    )
    return int(count or 0)


async def reassign_products(session: AsyncSession, from_ids: Iterable[uuid.UUID], to_id: uuid.UUID | None) -> None:
    """Move the products of some categories to another."""

    await session.execute(update(Product).where(Product.category_id.in_(list(from_ids))).values(category_id=to_id))


async def attributes(session: AsyncSession, *, page: int, limit: int) -> Paged[Attribute]:
    """Attribute definitions by name."""
    return await paged(session, select(Attribute).order_by(Attribute.name), page=page, limit=limit)


async def attribute(session: AsyncSession, attribute_id: uuid.UUID) -> Attribute | None:
    """One attribute definition."""
    return await session.get(Attribute, attribute_id)


async def attribute_by_slug(session: AsyncSession, slug: str) -> Attribute | None:
    """The attribute with ``slug``."""
    return (await session.execute(select(Attribute).where(Attribute.slug == slug))).scalar_one_or_none()


async def attribute_values(session: AsyncSession, attribute_ids: Iterable[uuid.UUID]) -> Sequence[AttributeValue]:
    """Allowed values of the given attributes, in position order."""
    ids = list(attribute_ids)
    if not ids:
        return []
    return (
        (
            await session.execute(
                select(AttributeValue)
                .where(AttributeValue.attribute_id.in_(ids))
                .order_by(AttributeValue.position, AttributeValue.value)
            )
        )
        .scalars()
        .all()
    )


async def public_catalog(
    session: AsyncSession,
    *,
    category_ids: set[uuid.UUID] | None,
    min_price: Decimal | None,
    max_price: Decimal | None,
    search: str | None,
    page: int,
    limit: int,
) -> tuple[Sequence[Product], int]:
    """Active products for source 001's ``/catalog`` (no relations needed), newest first, and the total."""
    query = select(Product).where(Product.deleted_at.is_(None), Product.status == ProductStatus.active)
    if category_ids is not None:
        query = query.where(Product.category_id.in_(category_ids))
    if min_price is not None:
        query = query.where(Product.price >= min_price)
    if max_price is not None:
        query = query.where(Product.price <= max_price)
    if search:
        like = f"%{_escape_like(search.lower())}%"
        query = query.where(
            or_(
                func.lower(Product.name).like(like, escape="\\"),
                func.lower(Product.sku).like(like, escape="\\"),
            )
        )
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = (
        (
            await session.execute(
                query.order_by(Product.created_at.desc(), Product.id.desc()).limit(limit).offset((page - 1) * limit)
            )
        )
        .scalars()
        .all()
    )
    return rows, int(total or 0)


async def max_image_position(session: AsyncSession, product_id: uuid.UUID) -> int:
    """The highest image position of a product (-1 without images)."""
    value = await session.scalar(select(func.max(ProductImage.position)).where(ProductImage.product_id == product_id))
    return -1 if value is None else int(value)


async def products_by_sku(session: AsyncSession, skus: Iterable[str]) -> dict[str, uuid.UUID]:
    """Ids of the products (soft-deleted included) whose SKU is one of ``skus``, keyed by SKU."""
    wanted = list(skus)
    found: dict[str, uuid.UUID] = {}
    for start in range(0, len(wanted), 500):
        rows = await session.execute(
            select(Product.sku, Product.id).where(Product.sku.in_(wanted[start : start + 500]))
        )
        found.update({sku: pid for sku, pid in rows if sku is not None})
    return found


async def add_remote_images(
    session: AsyncSession,
    product_id: uuid.UUID,
    images: Sequence[tuple[str, str | None, str | None]],
    *,
    replace: bool = False,
    start: int | None = None,
) -> None:
    """Attach images that stay at remote URLs (``(url, thumbnail_url, alt)``) from position ``start``
    (default: after the product's last image); ``replace`` first removes its remote images (uploads, which
    have a ``storage_key``, are kept). The rows are added to the session and written at its next flush."""
    from sqlalchemy import delete

    from mercato.platform import clock

    if replace:
        await session.execute(
            delete(ProductImage).where(ProductImage.product_id == product_id, ProductImage.storage_key.is_(None))
        )
    if start is None:
        start = await max_image_position(session, product_id) + 1
    session.add_all(
        ProductImage(
            id=clock.new_id(),
            product_id=product_id,
            url=url,
            thumbnail_url=thumbnail_url,
            alt=alt,
            position=start + index,
            created_at=clock.now(),
        )
        for index, (url, thumbnail_url, alt) in enumerate(images)
    )
