"""Every shipping query: methods (all, active, one page) and the tax-rate table (one country's rows, a page, and
the replacement of the whole table)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.db.queries import Paged, paged
from mercato.shipping.models import ShippingMethod, TaxRate

#: Statements of the checkout path, built once (their values are bind parameters).
_ACTIVE_METHODS = (
    select(ShippingMethod).where(ShippingMethod.is_active.is_(True)).order_by(ShippingMethod.name, ShippingMethod.id)
)
_TAX_RATES_OF = select(TaxRate).where(TaxRate.country == bindparam("country"))


async def active_methods(session: AsyncSession) -> list[ShippingMethod]:
    """Every active method (a store has a handful), by name."""
    return list((await session.execute(_ACTIVE_METHODS)).scalars())


async def has_methods(session: AsyncSession) -> bool:
    """Whether any method exists, active or not."""
    return (await session.execute(select(ShippingMethod.id).limit(1))).first() is not None


async def method(session: AsyncSession, method_id: uuid.UUID) -> ShippingMethod | None:
    """The method with ``method_id``, active or not."""
    return await session.get(ShippingMethod, method_id)


async def methods_page(
    session: AsyncSession, *, include_inactive: bool, page: int, limit: int
) -> Paged[ShippingMethod]:
    """A page of methods by name; inactive ones only when ``include_inactive``."""
    query = select(ShippingMethod)
    if not include_inactive:
        query = query.where(ShippingMethod.is_active.is_(True))
    return await paged(session, query.order_by(ShippingMethod.name, ShippingMethod.id), page=page, limit=limit)


def add(session: AsyncSession, *methods: ShippingMethod) -> None:
    """Stage new methods (written at the next flush)."""
    session.add_all(methods)


async def remove(session: AsyncSession, shipping_method: ShippingMethod) -> None:
    """Delete the method's row."""
    await session.delete(shipping_method)


async def tax_rates_of(session: AsyncSession, country: str) -> list[TaxRate]:
    """The rows of ``country`` (upper-case ISO code): its own (``region`` null) and its regions'."""
    return list((await session.execute(_TAX_RATES_OF, {"country": country})).scalars())


#: Table order: by country, the country's own row (region null) first, then its regions by name.
TABLE_ORDER = (TaxRate.country, TaxRate.region.is_not(None), TaxRate.region)


async def tax_rates_page(session: AsyncSession, *, page: int, limit: int) -> Paged[TaxRate]:
    """A page of the table by country, each country's own row before its regions'."""
    return await paged(session, select(TaxRate).order_by(*TABLE_ORDER), page=page, limit=limit)


async def replace_tax_rates(session: AsyncSession, rows: Sequence[TaxRate]) -> list[TaxRate]:
    """Replace the whole table with ``rows`` and return it in table order. On PostgreSQL the table is locked
    first (``SHARE ROW EXCLUSIVE``: readers go on, a concurrent replacement waits), so two replacements never
    mix; SQLite has one writer at a time."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("LOCK TABLE tax_rates IN SHARE ROW EXCLUSIVE MODE"))
    await session.execute(delete(TaxRate), execution_options={"synchronize_session": False})
    session.add_all(rows)
    await session.flush()
    query = select(TaxRate).order_by(*TABLE_ORDER).execution_options(populate_existing=True)
    return list((await session.execute(query)).scalars())
