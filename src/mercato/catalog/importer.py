"""Product import for shop owners (``mercato import products FILE``) and for the demo store.

Two formats carry the same data (docs/importing.md documents both):

- JSON: a list of products (or ``{"products": [...]}``), each an object shaped like :class:`ProductSpec`,
  with its variants nested;
- CSV: one row per product or per variant (a variant row names its product in ``parent_sku``); tags and
  image URLs are pipe-separated, variant options are ``option_<name>`` columns and product attributes
  ``attr_<name>``.

Every product goes through :func:`mercato.catalog.service.create_product` (or ``update_product``) acting as
an admin, so validation, stock rows, search indexing and cache invalidation apply as for ``POST /products``.
Missing categories are created from their path (``"Apparel/T-shirts"`` or ``"apparel/t-shirts"``) through
:func:`mercato.catalog.categories.create`. Products are written in SAVEPOINTs: a failing row is reported as
``{row, sku, error}``, leaves no trace, and the other rows still land. Products whose SKU already exists are
skipped (the import is idempotent) unless ``update=True``. Nothing here commits: the caller owns the
transaction.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.catalog import categories, repository, rules
from mercato.catalog import service as catalog_service
from mercato.catalog.models import Product, ProductStatus
from mercato.catalog.schemas import (
    AttributeCreate,
    CategoryCreate,
    Modifier,
    Name,
    Price,
    ProductCreate,
    ProductUpdate,
    Sku,
    Slug,
    Stock,
    Tag,
    VariantCreate,
    VariantUpdate,
)
from mercato.errors import DomainError, ValidationFailed
from mercato.identity.models import Role
from mercato.identity.principal import Principal
from mercato.schemas import RequestModel

#: The importer acts as an admin without a user (no vendor is attached to imported products).
IMPORTER = Principal(role=Role.admin)
Url = Annotated[str, Field(min_length=1, max_length=1000)]
OptionName = Annotated[str, Field(min_length=1, max_length=50)]
OptionValue = Annotated[str, Field(max_length=100)]
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class ImportFileError(Exception):
    """The file as a whole cannot be read: not JSON, not UTF-8, unknown or missing CSV columns..."""


# --- the JSON shape -----------------------------------------------------------------------------------------


class ImageSpec(RequestModel):
    """An image that stays at a remote URL (``url`` may be absolute)."""

    url: Url
    thumbnail_url: Url | None = None
    alt: Annotated[str, Field(max_length=300)] | None = None


class VariantSpec(RequestModel):
    """A variant: its SKU, options (``{"size": "M"}``), price modifier (added to the product's price) and
    stock. ``name`` defaults to the option values joined by `` / `` (or the SKU)."""

    sku: Sku
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    options: dict[OptionName, OptionValue] = Field(default_factory=dict, max_length=20)
    price_modifier: Modifier = Decimal("0")
    stock: Stock = 0
    reorder_point: Stock = 0
    image_url: Url | None = None

    def create(self) -> VariantCreate:
        """The catalog service's request for this variant."""
        name = self.name or " / ".join(self.options.values()) or self.sku
        return VariantCreate(
            sku=self.sku,
            name=name[:200],
            options=self.options,
            price_modifier=self.price_modifier,
            stock=self.stock,
            reorder_point=self.reorder_point,
            image_url=self.image_url,
        )


class ProductSpec(RequestModel):
    """One product of an import (docs/importing.md). ``sku`` is required: it is how a second import recognises
    the product. ``category`` is a path of names or slugs separated by ``/``; missing categories are created.
    ``rating`` (0–5) and ``rating_count`` seed the product's rating; ``status`` defaults to ``active``."""

    name: Name
    sku: Sku
    slug: Slug | None = None
    price: Price
    compare_at_price: Price | None = None
    description: Annotated[str, Field(max_length=20_000)] | None = None
    brand: Annotated[str, Field(min_length=1, max_length=120)] | None = None
    category: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    stock: Stock = 0
    reorder_point: Stock = 0
    weight_grams: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    rating: Annotated[Decimal, Field(ge=0, le=5)] | None = None
    rating_count: Annotated[int, Field(ge=0)] | None = None
    images: list[Url | ImageSpec] = Field(default_factory=list, max_length=50)
    attributes: dict[Annotated[str, Field(min_length=1, max_length=100)], Any] = Field(
        default_factory=dict, max_length=50
    )
    specifications: dict[Annotated[str, Field(max_length=100)], Any] = Field(default_factory=dict, max_length=100)
    status: ProductStatus = ProductStatus.active
    variants: list[VariantSpec] = Field(default_factory=list, max_length=200)

    def image_specs(self) -> list[ImageSpec]:
        """``images`` with plain URLs turned into :class:`ImageSpec`."""
        return [ImageSpec(url=i) if isinstance(i, str) else i for i in self.images]


# --- reports ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    """A row that was not imported: its number (JSON: position in the list from 1; CSV: the header is row 1),
    its SKU when known, and why."""

    row: int
    sku: str | None
    error: str

    def as_dict(self) -> dict[str, Any]:
        """``{row, sku, error}``."""
        return {"row": self.row, "sku": self.sku, "error": self.error}


@dataclass
class ImportReport:
    """What an import did: products created, updated, skipped (SKU already present) and the failed rows."""

    created: int = 0
    updated: int = 0
    skipped: int = 0
    categories_created: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no row failed."""
        return not self.errors

    def summary(self) -> str:
        """One line: ``created 3, updated 0, skipped 1, errors 2``."""
        counts = f"created {self.created}, updated {self.updated}, skipped {self.skipped}"
        return f"{counts}, errors {len(self.errors)}"


# --- reading files ------------------------------------------------------------------------------------------


@dataclass
class _Item:
    """A product to import (``variants`` hold ``(row, raw variant)``), or, when ``parent_sku`` is set,
    variants to add to a stored product that is not in the file."""

    row: int
    sku: str | None
    raw: dict[str, Any]
    variants: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    parent_sku: str | None = None


@dataclass
class ImportBatch:
    """A parsed file: the products to import and the rows that already failed while reading."""

    items: list[_Item] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def from_dicts(products: Iterable[Mapping[str, Any]]) -> ImportBatch:
    """A batch from products in the JSON shape; rows are numbered from 1 in order."""
    batch = ImportBatch()
    for row, product in enumerate(products, start=1):
        if not isinstance(product, Mapping):
            batch.errors.append(RowError(row, None, "each product must be a JSON object"))
            continue
        raw = dict(product)
        variants = raw.pop("variants", None) or []
        if not isinstance(variants, list):
            batch.errors.append(RowError(row, _sku_of(raw), "variants: must be a list"))
            continue
        batch.items.append(_Item(row, _sku_of(raw), raw, [(row, v) for v in variants]))
    return batch


def read_json(text: str) -> ImportBatch:
    """Parse a JSON import: a list of products or ``{"products": [...]}``.

    Raises:
        ImportFileError: not JSON, or not a list of products.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"not valid JSON: {exc}") from exc
    if isinstance(document, dict) and set(document) == {"products"}:
        document = document["products"]
    if not isinstance(document, list):
        raise ImportFileError('expected a JSON list of products (or {"products": [...]})')
    return from_dicts(document)


#: CSV columns of product rows, of variant rows, and of both. ``option_<name>`` (variant rows) and
#: ``attr_<name>`` (product rows) columns are accepted too.
PRODUCT_COLUMNS = frozenset(
    {
        "name", "slug", "price", "compare_at_price", "category", "brand", "description", "tags",
        "weight_grams", "status", "rating", "rating_count",
    }
)  # fmt: skip
VARIANT_COLUMNS = frozenset({"parent_sku", "price_modifier"})
SHARED_COLUMNS = frozenset({"sku", "stock", "reorder_point", "image_urls"})


def read_csv(text: str) -> ImportBatch:
    """Parse a CSV import (comma-separated, UTF-8, a header row; see docs/importing.md).

    Raises:
        ImportFileError: no header, a missing ``sku`` column, an unknown or repeated column.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    header = next(reader, None)
    if not header:
        raise ImportFileError("the CSV file is empty; the first row must name the columns")
    columns = [c.strip().lower() for c in header]
    _check_columns(columns)
    batch = ImportBatch()
    products: dict[str, _Item] = {}
    failed: dict[str, int] = {}
    variant_rows: list[tuple[int, str, dict[str, str]]] = []
    for row, record in enumerate(reader, start=2):
        if not any(cell.strip() for cell in record):
            continue
        if len(record) > len(columns):
            batch.errors.append(RowError(row, None, f"{len(record)} cells but only {len(columns)} columns"))
            continue
        cells = {c: v.strip() for c, v in zip(columns, record, strict=False) if v.strip()}
        sku = cells.get("sku")
        if "parent_sku" in cells:
            variant_rows.append((row, cells["parent_sku"], cells))
            continue
        if sku in products:
            batch.errors.append(RowError(row, sku, f"duplicate SKU: also on row {products[sku].row}"))
            continue
        try:
            item = _Item(row, sku, _product_row(cells))
        except ValueError as exc:
            batch.errors.append(RowError(row, sku, str(exc)))
            if sku:
                failed.setdefault(sku, row)
            continue
        batch.items.append(item)
        if sku:
            products[sku] = item
    orphans: dict[str, _Item] = {}
    for row, parent_sku, cells in variant_rows:
        try:
            variant = _variant_row(cells)
        except ValueError as exc:
            batch.errors.append(RowError(row, cells.get("sku"), str(exc)))
            continue
        if parent_sku in failed:
            error = f"its product (row {failed[parent_sku]}) has errors"
            batch.errors.append(RowError(row, cells.get("sku"), error))
            continue
        parent = products.get(parent_sku)
        if parent is None:
            parent = orphans.get(parent_sku)
            if parent is None:
                parent = orphans[parent_sku] = _Item(row, parent_sku, {}, parent_sku=parent_sku)
                batch.items.append(parent)
        parent.variants.append((row, variant))
    return batch


def _check_columns(columns: list[str]) -> None:
    known = PRODUCT_COLUMNS | VARIANT_COLUMNS | SHARED_COLUMNS
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise ImportFileError(f"column {column!r} appears twice")
        seen.add(column)
        prefixed = column.startswith(("option_", "attr_")) and len(column.split("_", 1)[1]) > 0
        if column not in known and not prefixed:
            names = ", ".join(sorted(known))
            raise ImportFileError(f"unknown column {column!r}; known: {names}, option_<name>, attr_<name>")
    if "sku" not in seen:
        raise ImportFileError("the CSV file needs a 'sku' column")


def _product_row(cells: dict[str, str]) -> dict[str, Any]:
    misplaced = sorted(c for c in cells if c in VARIANT_COLUMNS or c.startswith("option_"))
    if misplaced:
        raise ValueError(f"{', '.join(misplaced)}: only for variant rows (rows with parent_sku)")
    raw: dict[str, Any] = {}
    for column, value in cells.items():
        if column == "tags":
            raw["tags"] = _split(value)
        elif column == "image_urls":
            raw["images"] = _split(value)
        elif column.startswith("attr_"):
            raw.setdefault("attributes", {})[column.removeprefix("attr_")] = value
        else:
            raw[column] = value
    return raw


def _variant_row(cells: dict[str, str]) -> dict[str, Any]:
    misplaced = sorted(c for c in cells if (c in PRODUCT_COLUMNS and c != "name") or c.startswith("attr_"))
    if misplaced:
        raise ValueError(f"{', '.join(misplaced)}: only for product rows (variant rows use price_modifier)")
    raw: dict[str, Any] = {}
    for column, value in cells.items():
        if column == "parent_sku":
            continue
        if column == "image_urls":
            raw["image_url"] = _split(value)[0] if _split(value) else None
        elif column.startswith("option_"):
            raw.setdefault("options", {})[column.removeprefix("option_")] = value
        else:
            raw[column] = value
    try:
        VariantSpec.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(_describe(exc)) from exc
    return raw


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split("|") if part.strip()]


def read_file(path: Path, fmt: str | None = None) -> ImportBatch:
    """Read and parse an import file; the format (``json`` or ``csv``) is ``fmt`` or comes from the file's
    extension.

    Raises:
        ImportFileError: unreadable file, unknown format, or a file-level problem of the format.
    """
    chosen = fmt or {".json": "json", ".csv": "csv"}.get(path.suffix.lower())
    if chosen not in ("json", "csv"):
        raise ImportFileError(f"cannot tell the format of {path.name}; pass --format json or --format csv")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError(f"cannot read {path}: {exc}") from exc
    return read_json(text) if chosen == "json" else read_csv(text)


# --- importing ----------------------------------------------------------------------------------------------


async def import_products(
    session: AsyncSession, products: Iterable[Mapping[str, Any]], *, update: bool = False
) -> ImportReport:
    """Import products given in the JSON shape (rows numbered from 1). See :func:`run_import`."""
    return await run_import(session, from_dicts(products), update=update)


async def has_products(session: AsyncSession) -> bool:
    """True when the catalog holds any product, soft-deleted ones included."""
    return (await session.scalar(select(Product.id).limit(1))) is not None


#: Products written per SAVEPOINT on the happy path; a chunk with a failing row is replayed one row at a time.
CHUNK = 50
_ROW_ERRORS = (DomainError, ValidationError, IntegrityError, DataError)


async def run_import(
    session: AsyncSession, batch: ImportBatch, *, update: bool = False, principal: Principal = IMPORTER
) -> ImportReport:
    """Import a parsed batch in the caller's transaction.

    Products whose SKU exists are skipped, or updated when ``update`` is true (fields given replace the
    stored ones; variants are matched by SKU, new ones added; images given replace the remote images). A row
    that fails (validation, duplicate SKU, unknown parent_sku...) is reported and leaves no trace: rows are
    written in SAVEPOINTs of :data:`CHUNK` products, and a chunk in which a row fails is rolled back and
    replayed with one SAVEPOINT per row.
    """
    report = ImportReport(errors=list(batch.errors))
    wanted = {i.sku for i in batch.items if i.sku} | {i.parent_sku for i in batch.items if i.parent_sku}
    existing = await repository.products_by_sku(session, wanted)
    writer = _Writer(session, principal, existing, report)
    seen: dict[str, int] = {}
    ready: list[tuple[_Item, ProductSpec]] = []
    for item in sorted(batch.items, key=lambda i: (i.parent_sku is not None, i.row)):
        if item.parent_sku is not None:
            await _import_variants(session, principal, item, existing.get(item.parent_sku), update, report)
            continue
        if item.sku in seen:
            report.errors.append(RowError(item.row, item.sku, f"duplicate SKU: also on row {seen[item.sku]}"))
            continue
        if item.sku:
            seen[item.sku] = item.row
        try:
            spec = ProductSpec.model_validate({**item.raw, "variants": [v for _, v in item.variants]})
        except ValidationError as exc:
            report.errors.append(RowError(item.row, item.sku, _describe(exc)))
            continue
        if spec.sku in existing and not update:
            report.skipped += 1
            continue
        ready.append((item, spec))
        if len(ready) >= CHUNK:
            await writer.write(ready)
            ready = []
    if ready:
        await writer.write(ready)
    report.categories_created = writer.categories.created
    await writer.attributes.register(session)
    report.errors.sort(key=lambda e: e.row)
    return report


class _Writer:
    """Writes validated products chunk by chunk; ratings and images of a chunk are written together at its
    end (one UPDATE and one INSERT for the chunk rather than one of each per product)."""

    def __init__(
        self,
        session: AsyncSession,
        principal: Principal,
        existing: dict[str, uuid.UUID],
        report: ImportReport,
    ) -> None:
        self.session = session
        self.principal = principal
        self.existing = existing
        self.report = report
        self.categories = _Categories(session)
        self.attributes = _Attributes()

    async def write(self, rows: Sequence[tuple[_Item, ProductSpec]]) -> None:
        """Write ``rows`` in one SAVEPOINT; if any fails, replay them one SAVEPOINT each."""
        if len(rows) > 1:
            try:
                async with self.session.begin_nested():
                    await self._write_rows(rows)
            except _ROW_ERRORS:
                self.categories.rollback()
            else:
                self._done(rows)
                return
        for item, spec in rows:
            try:
                async with self.session.begin_nested():
                    await self._write_rows([(item, spec)])
            except _ROW_ERRORS as exc:
                self.categories.rollback()
                self.report.errors.append(RowError(item.row, item.sku, _describe(exc)))
            else:
                self._done([(item, spec)])

    async def _write_rows(self, rows: Sequence[tuple[_Item, ProductSpec]]) -> None:
        written: list[tuple[Product, ProductSpec, bool]] = []
        for _, spec in rows:
            if spec.sku in self.existing:
                product_id = self.existing[spec.sku]
                product = await _update(self.session, self.principal, product_id, spec, self.categories)
                written.append((product, spec, True))
            else:
                product = await _create(self.session, self.principal, spec, self.categories)
                written.append((product, spec, False))
        for product, spec, updated in written:
            _rate(product, spec)
            if updated and "images" not in spec.model_fields_set:
                continue
            images = [(i.url, i.thumbnail_url, i.alt) for i in spec.image_specs()]
            await repository.add_remote_images(
                self.session, product.id, images, replace=updated, start=None if updated else 0
            )
        await self.session.flush()

    def _done(self, rows: Sequence[tuple[_Item, ProductSpec]]) -> None:
        self.categories.keep()
        for _, spec in rows:
            self.attributes.collect(spec)
            if spec.sku in self.existing:
                self.report.updated += 1
            else:
                self.report.created += 1


async def _create(session: AsyncSession, principal: Principal, spec: ProductSpec, resolver: _Categories) -> Product:
    category_id = await resolver.resolve(spec.category) if spec.category else None
    return await catalog_service.create_product(
        session,
        principal,
        ProductCreate(
            name=spec.name,
            slug=spec.slug,
            description=spec.description,
            sku=spec.sku,
            price=spec.price,
            compare_at_price=spec.compare_at_price,
            category_id=category_id,
            brand=spec.brand,
            status=spec.status,
            attributes=spec.attributes,
            specifications=spec.specifications,
            tags=spec.tags,
            weight_grams=spec.weight_grams,
            stock=spec.stock,
            reorder_point=spec.reorder_point,
            variants=[v.create() for v in spec.variants],
        ),
    )


_UPDATABLE = (
    "name", "slug", "description", "price", "compare_at_price", "brand", "status", "attributes",
    "specifications", "tags", "weight_grams", "reorder_point",
)  # fmt: skip


async def _update(
    session: AsyncSession,
    principal: Principal,
    product_id: uuid.UUID,
    spec: ProductSpec,
    resolver: _Categories,
) -> Product:
    given = spec.model_fields_set
    changes: dict[str, Any] = {name: getattr(spec, name) for name in _UPDATABLE if name in given}
    if "category" in given:
        changes["category_id"] = await resolver.resolve(spec.category) if spec.category else None
    if "stock" in given:
        changes["stock"] = spec.stock
    product = await catalog_service.update_product(
        session, principal, str(product_id), ProductUpdate.model_validate(changes)
    )
    by_sku = {v.sku: v.id for v in product.variants}
    for variant in spec.variants:
        product = await _upsert_variant(session, principal, product.id, by_sku.get(variant.sku), variant)
    return product


async def _upsert_variant(
    session: AsyncSession,
    principal: Principal,
    product_id: uuid.UUID,
    variant_id: uuid.UUID | None,
    spec: VariantSpec,
) -> Product:
    if variant_id is None:
        return await catalog_service.add_variant(session, principal, str(product_id), spec.create())
    given = spec.model_fields_set - {"sku", "reorder_point"}
    return await catalog_service.update_variant(
        session,
        principal,
        str(product_id),
        variant_id,
        VariantUpdate.model_validate({name: getattr(spec, name) for name in given}),
    )


async def _import_variants(
    session: AsyncSession,
    principal: Principal,
    item: _Item,
    product_id: uuid.UUID | None,
    update: bool,
    report: ImportReport,
) -> None:
    """CSV variant rows whose product is not in the file: added to the stored product with that SKU."""
    if product_id is None:
        for row, raw in item.variants:
            report.errors.append(RowError(row, raw.get("sku"), f"unknown parent_sku {item.parent_sku!r}"))
        return
    stored = await repository.product(session, product_id)
    by_sku = {v.sku: v.id for v in stored.variants} if stored is not None else {}
    for row, raw in item.variants:
        spec = VariantSpec.model_validate(raw)
        if spec.sku in by_sku and not update:
            report.skipped += 1
            continue
        try:
            async with session.begin_nested():
                await _upsert_variant(session, principal, product_id, by_sku.get(spec.sku), spec)
        except _ROW_ERRORS as exc:
            report.errors.append(RowError(row, spec.sku, _describe(exc)))
            continue
        if spec.sku in by_sku:
            report.updated += 1
        else:
            report.created += 1


def _rate(product: Product, spec: ProductSpec) -> None:
    if spec.rating is not None:
        product.rating_average = spec.rating.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    if spec.rating_count is not None:
        product.rating_count = spec.rating_count


def _sku_of(raw: Mapping[str, Any]) -> str | None:
    sku = raw.get("sku")
    return sku.strip() or None if isinstance(sku, str) else None


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for error in exc.errors():
            loc = ".".join(str(p) for p in error["loc"])
            parts.append(f"{loc}: {error['msg']}" if loc else error["msg"])
        return "; ".join(dict.fromkeys(parts))
    if isinstance(exc, DomainError):
        return exc.detail
    if isinstance(exc, IntegrityError):
        return "conflicts with existing data (a SKU or slug is already used)"
    if isinstance(exc, DataError):
        return "a value does not fit its database column (too long or out of range)"
    return str(exc)


# --- categories and attribute definitions -------------------------------------------------------------------


class _Categories:
    """Resolves category paths to ids, creating missing categories; a failed row's creations are forgotten."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.loaded = False
        self.by_slug: dict[str, uuid.UUID] = {}
        self.children: dict[tuple[uuid.UUID | None, str], uuid.UUID] = {}
        self.pending: list[tuple[str, tuple[uuid.UUID | None, str], tuple[uuid.UUID | None, str]]] = []
        self.created = 0

    async def _load(self) -> None:
        for category in await repository.categories(self.session):
            self._remember(category.id, category.parent_id, category.name, category.slug)
        self.loaded = True

    def _remember(self, category_id: uuid.UUID, parent: uuid.UUID | None, name: str, slug: str) -> None:
        self.by_slug.setdefault(slug, category_id)
        self.children.setdefault((parent, name.lower()), category_id)
        self.children.setdefault((parent, slug), category_id)

    async def resolve(self, path: str) -> uuid.UUID:
        """The id of the category at ``path``. Each segment is matched, in order, to a child of the previous
        segment by name or slug, then to any category with that slug (slugs are unique store-wide); otherwise
        it is created under the previous segment.

        Raises:
            ValidationFailed: an empty or over-long segment.
        """
        if not self.loaded:
            await self._load()
        parent: uuid.UUID | None = None
        for segment in (s.strip() for s in path.split("/")):
            if not segment or len(segment) > 200:
                raise ValidationFailed(f"category: bad path {path!r}", field="category")
            slug = rules.slugify(segment, max_length=200)
            found = (
                self.children.get((parent, segment.lower()))
                or self.children.get((parent, slug))
                or self.by_slug.get(slug)
            )
            if found is None:
                name = segment.replace("-", " ").capitalize() if _SLUG.match(segment) else segment
                category = await categories.create(self.session, CategoryCreate(name=name, parent_id=parent))
                self.created += 1
                self.pending.append((category.slug, (parent, name.lower()), (parent, category.slug)))
                self._remember(category.id, parent, name, category.slug)
                found = category.id
            parent = found
        assert parent is not None
        return parent

    def keep(self) -> None:
        """The row committed its savepoint: categories it created stay."""
        self.pending.clear()

    def rollback(self) -> None:
        """The row's savepoint was rolled back: forget the categories it created."""
        for slug, by_name, by_slug in self.pending:
            self.by_slug.pop(slug, None)
            self.children.pop(by_name, None)
            self.children.pop(by_slug, None)
            self.created -= 1
        self.pending.clear()


@dataclass
class _Attributes:
    """Attribute definitions (``/attributes``) for the text-valued attributes and options imported."""

    values: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)

    def collect(self, spec: ProductSpec) -> None:
        pairs: list[tuple[str, Any]] = list(spec.attributes.items())
        pairs += [pair for v in spec.variants for pair in v.options.items()]
        for key, value in pairs:
            if not isinstance(value, str) or not value.strip() or len(value) > 200:
                continue
            slug = rules.slugify(key, max_length=100)
            name = key.replace("-", " ").replace("_", " ").capitalize() if _SLUG.match(key) else key
            known = self.values.setdefault(slug, (name[:100], {}))[1]
            known.setdefault(rules.slugify(value), value)

    async def register(self, session: AsyncSession) -> None:
        """Create missing definitions and values (existing ones are kept)."""
        for slug, (name, values) in sorted(self.values.items()):
            try:
                async with session.begin_nested():
                    attribute = await repository.attribute_by_slug(session, slug)
                    if attribute is None:
                        await categories.create_attribute(
                            session, AttributeCreate(name=name, slug=slug, values=list(values.values())[:500])
                        )
                        continue
                    stored = {v.slug for v in await repository.attribute_values(session, [attribute.id])}
                    for value_slug, value in values.items():
                        if value_slug not in stored:
                            await categories.add_value(session, attribute.id, value)
            except (DomainError, ValidationError, IntegrityError, DataError):
                continue  # a definition that cannot be made does not undo the products
