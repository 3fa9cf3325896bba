"""Loads the demo store: an admin whose password is generated on first load and written to
``<data dir>/demo-credentials.txt`` (mode 0600), and, when the catalog is empty, the packaged DummyJSON and
Saleor catalogs (``data/ATTRIBUTION.md``) through the product importer, in one transaction; when the store has no
shipping method, the three of :data:`DEMO_SHIPPING_METHODS`. ``--scale N`` adds N generated products
(``GEN-00001``...) derived from them. Loading is idempotent: a second run changes nothing."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.catalog import importer
from mercato.config import Environment, Settings
from mercato.demo import sources
from mercato.identity.bootstrap import create_admin_account
from mercato.identity.models import Role, User
from mercato.platform.context import Services
from mercato.shipping import service as shipping
from mercato.shipping.schemas import ShippingMethodCreate

DEMO_ADMIN = "admin@demo.mercato.dev"
#: Generated products are written in transactions of this many products (a benchmark may ask for 100,000).
GENERATED_BATCH = 500
log = structlog.get_logger("mercato.demo")
#: The demo store's shipping (API.md "Shipping"): a worldwide standard method, an express method for a few
#: countries and a method that is free over a threshold.
DEMO_SHIPPING_METHODS = (
    ShippingMethodCreate(
        name="Standard",
        carrier="Mercato Post",
        base_rate=Decimal("4.99"),
        per_kg_rate=Decimal("1.00"),
        free_over=Decimal("75.00"),
        min_days=3,
        max_days=7,
        countries=[],
    ),
    ShippingMethodCreate(
        name="Express",
        carrier="DHL Express",
        base_rate=Decimal("14.99"),
        per_kg_rate=Decimal("2.50"),
        min_days=1,
        max_days=2,
        countries=["US", "CA", "GB", "DE", "FR"],
    ),
    ShippingMethodCreate(
        name="Economy (free over 50.00)",
        carrier="USPS",
        base_rate=Decimal("6.99"),
        per_kg_rate=Decimal("0.50"),
        free_over=Decimal("50.00"),
        min_days=5,
        max_days=10,
        countries=["US", "CA"],
    ),
)


@dataclass
class DemoResult:
    """What a load did: the catalog import (None when the catalog already held products), the generated
    products' import, and the time each took."""

    catalog: importer.ImportReport | None = None
    catalog_seconds: float = 0.0
    shipping_methods: int = 0
    generated: importer.ImportReport = field(default_factory=importer.ImportReport)
    generated_seconds: float = 0.0


async def load_demo(settings: Settings, *, scale: int = 0, services: Services | None = None) -> DemoResult:
    """Create the demo admin unless an admin exists, load the demo catalog when no product exists yet, and
    make sure generated products ``GEN-00001``..``GEN-<scale>`` exist. Refused in production.

    ``services`` lets a caller (tests) reuse its own; otherwise they are built from ``settings`` and closed.
    """
    if settings.env is Environment.production:
        raise RuntimeError("the demo store is not loaded in production")
    owned = services is None
    services = services or Services.build(settings)
    try:
        async with services.db.session(write=False) as session:
            has_admin = await session.scalar(select(User.id).where(User.role == Role.admin).limit(1))
        if has_admin is None:
            await _create_demo_admin(settings)
        result = DemoResult()
        started = time.perf_counter()
        async with services.db.session(write=True) as session:
            result.catalog = await load_catalog(session)
        result.catalog_seconds = time.perf_counter() - started
        if result.catalog is not None:
            _report("Demo catalog", result.catalog, result.catalog_seconds)
            await services.db.refresh_statistics()
        async with services.db.session(write=True) as session:
            result.shipping_methods = await load_shipping(session)
        if result.shipping_methods:
            print(f"Demo shipping methods: {result.shipping_methods} created")
        if scale > 0:
            started = time.perf_counter()
            result.generated = await add_generated(services, scale)
            result.generated_seconds = time.perf_counter() - started
            _report("Generated products", result.generated, result.generated_seconds)
        return result
    finally:
        if owned:
            await services.close()


async def _create_demo_admin(settings: Settings) -> None:
    password = secrets.token_urlsafe(12)
    await create_admin_account(settings, DEMO_ADMIN, password)
    path = settings.data_dir / "demo-credentials.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"email: {DEMO_ADMIN}\npassword: {password}\n")
    print(f"Demo admin: {DEMO_ADMIN} (password in {path})")


async def load_catalog(session: AsyncSession) -> importer.ImportReport | None:
    """Import the packaged demo catalog in the caller's transaction, unless the catalog holds any product
    (soft-deleted ones included). Returns the import's report, or None when nothing was done."""
    if await importer.has_products(session):
        return None
    return await importer.import_products(session, sources.packaged_products())


async def load_shipping(session: AsyncSession) -> int:
    """Create :data:`DEMO_SHIPPING_METHODS` in the caller's transaction, unless the store has any shipping
    method (inactive ones included). Returns how many were created."""
    if await shipping.has_methods(session):
        return 0
    for method in DEMO_SHIPPING_METHODS:
        await shipping.create_method(session, method)
    return len(DEMO_SHIPPING_METHODS)


async def add_generated(services: Services, count: int) -> importer.ImportReport:
    """Make sure generated products ``GEN-00001``..``GEN-<count>`` exist, creating the missing ones in
    transactions of :data:`GENERATED_BATCH` products, then refresh the planner's statistics when any was created.
    Returns the summed report."""
    base = sources.packaged_products()
    total = importer.ImportReport()
    for start in range(1, count + 1, GENERATED_BATCH):
        numbers = range(start, min(count, start + GENERATED_BATCH - 1) + 1)
        async with services.db.session(write=True) as session:
            report = await importer.import_products(session, sources.generated_products(base, numbers))
        total.created += report.created
        total.skipped += report.skipped
        total.categories_created += report.categories_created
        total.errors.extend(report.errors)
    if total.created:
        await services.db.refresh_statistics()
    return total


def _report(what: str, report: importer.ImportReport, seconds: float) -> None:
    print(f"{what}: {report.summary()} in {seconds:.2f} s")
    for error in report.errors[:20]:
        log.warning("demo.import_error", row=error.row, sku=error.sku, error=error.error)
