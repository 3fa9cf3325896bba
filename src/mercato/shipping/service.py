"""Shipping and tax use cases (API.md "Shipping", and "Cart" → Pricing for tax).

For other domains:

- :func:`quote` — the shipping method of an order (or of a cart shown for a destination): the one named, or the
  cheapest that ships to the country; returns the method's snapshot for ``Order.shipping_method``, the
  :class:`mercato.cart.rules.Shipping` terms for the pricing function and the estimated delivery window.
- :func:`tax_rate` — the tax rate of a destination (a region's row wins over its country's; none → 0).

Decisions:

- A method's cost is ``base_rate + per_kg_rate × weight`` (kg; products without a weight weigh nothing), rounded
  half-even to the cent. Whether it is free (``free_over``, compared with the subtotal after discount) is decided
  by the one pricing function, :func:`mercato.cart.rules.price`.
- "Cheapest" compares what the customer would pay (``free_over`` applied when the subtotal is known), then the
  latest delivery day, then the name.
- A store without active shipping methods charges no shipping. Once a method exists, a destination no method
  ships to is refused (422).
- ``DELETE /shipping/methods/{id}`` deletes the row for good: orders keep a JSON snapshot of their method. To
  stop offering a method for a while, set ``is_active`` false.
- Delivery windows count business days (Monday–Friday) from today's date in UTC; see
  :func:`mercato.shipping.rules.add_business_days`.

Functions take the caller's session, flush but never commit; amounts are ``Decimal`` in the store currency.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.cart import rules as pricing
from mercato.catalog.units import Unit, UnitKey, require_units, sellable_units
from mercato.db.queries import Paged
from mercato.errors import ValidationFailed
from mercato.platform import clock
from mercato.shipping import repository, rules
from mercato.shipping.errors import ShippingMethodNotFound
from mercato.shipping.models import ShippingMethod, TaxRate
from mercato.shipping.rules import DeliveryWindow
from mercato.shipping.schemas import ShippingMethodCreate, ShippingMethodUpdate, TaxRateIn

#: ``(product_id, variant_id, quantity)``, as the cart and the order hold their lines.
Units = Sequence[tuple[uuid.UUID, uuid.UUID | None, int]]
NO_TAX = Decimal("0")


@dataclass(frozen=True)
class Option:
    """A method priced for one destination and parcel: ``rate`` is its weight-based price, ``cost`` what the
    customer pays (``0.00`` when the subtotal reaches ``free_over``), ``delivery`` the expected window."""

    method: ShippingMethod
    rate: Decimal
    cost: Decimal
    delivery: DeliveryWindow


@dataclass(frozen=True)
class Quote:
    """The shipping of an order, as :func:`quote` chose it.

    Attributes:
        method_id: the chosen method.
        snapshot: JSON-safe copy of the method for ``Order.shipping_method``: ``id``, ``name``, ``carrier``,
            ``base_rate``, ``per_kg_rate``, ``free_over`` (strings or null), ``min_days``, ``max_days``,
            ``weight_kg`` (string), ``rate`` (its price for this parcel before ``free_over``, string) and
            ``estimated_delivery`` ``{min_date, max_date}`` (ISO dates).
        shipping: the terms for :func:`mercato.cart.rules.price` (``rate`` for this parcel, ``free_over``).
        delivery: the estimated delivery window.
    """

    method_id: uuid.UUID
    snapshot: dict[str, Any]
    shipping: pricing.Shipping
    delivery: DeliveryWindow


# --- for the orders and cart domains ---------------------------------------------------------------------------


async def quote(
    session: AsyncSession,
    *,
    country: str,
    units: Units,
    method_id: uuid.UUID | None,
    subtotal: Decimal | None = None,
    known_units: Mapping[UnitKey, Unit] | None = None,
    now: datetime | None = None,
    method_field: str = "shipping_method_id",
    country_loc: Sequence[str | int] = ("body", "shipping_address", "country"),
) -> Quote | None:
    """Choose the shipping of an order (or of a cart shown for a destination).

    Args:
        country: the destination's ISO 3166-1 alpha-2 code.
        units: what is shipped, ``(product_id, variant_id, quantity)``; weights come from the catalog
            (``weight_grams``; none = 0). Units that are not for sale weigh nothing here: the caller checks them.
        method_id: the method the customer chose, or None for the cheapest one that ships to ``country``.
        subtotal: the subtotal after discount, when known: picking the cheapest method then takes ``free_over``
            into account (a method that is free for this order beats a cheaper one that is not).
        known_units: units the caller already read with :mod:`mercato.catalog.units` (their weights are used
            instead of reading them again).
        now: aware UTC time the delivery window counts from (default :func:`mercato.platform.clock.now`).
        method_field: the request field that carried ``method_id``, named by the errors.
        country_loc: where the destination country was in the request, named by the error when no method ships
            there.

    Returns:
        The :class:`Quote`, or None when the store has no active shipping method at all (no shipping charged).

    Raises:
        ValidationFailed: ``method_id`` is unknown or inactive, or the method does not ship to ``country``
            (``method_field``); active methods exist but none ships to ``country`` (``country_loc``).
    """
    country = country.upper()
    methods = await repository.active_methods(session)
    if method_id is not None:
        chosen = next((candidate for candidate in methods if candidate.id == method_id), None)
        if chosen is None:
            raise ValidationFailed(f"No shipping method {method_id} is offered.", field=method_field)
        if not rules.ships_to(chosen.countries, country):
            raise ValidationFailed(f"{chosen.name} does not ship to {country}.", field=method_field)
        candidates = [chosen]
    else:
        if not methods:
            return None
        candidates = [candidate for candidate in methods if rules.ships_to(candidate.countries, country)]
        if not candidates:
            raise ValidationFailed(f"No shipping method ships to {country}.", loc=list(country_loc))
    weight = Decimal(0)
    if any(candidate.per_kg_rate for candidate in candidates):
        weight = await _weight(session, units, known_units or {})
    best = _options(candidates, weight=weight, subtotal=subtotal, now=now or clock.now())[0]
    return Quote(
        method_id=best.method.id,
        snapshot=_snapshot(best, weight),
        shipping=pricing.Shipping(best.rate, best.method.free_over),
        delivery=best.delivery,
    )


async def tax_rate(session: AsyncSession, country: str, region: str | None) -> Decimal:
    """The tax rate (a fraction, e.g. ``Decimal("0.0825")``) of a destination: the row of ``region`` in
    ``country`` (regions compare case-insensitively), else the country's own row, else ``0`` (no tax)."""
    rows = await repository.tax_rates_of(session, country.upper())
    wanted = region.strip().casefold() if region and region.strip() else None
    country_rate = NO_TAX
    for row in rows:
        if row.region is None:
            country_rate = row.rate
        elif wanted is not None and row.region.casefold() == wanted:
            return row.rate
    return country_rate


# --- POST /shipping/calculate ----------------------------------------------------------------------------------


async def calculate(
    session: AsyncSession, *, country: str, units: Units, method_id: uuid.UUID | None = None
) -> list[Option]:
    """What each active method that ships to ``country`` costs for ``units`` at current prices, cheapest first;
    ``free_over`` compares with the units' subtotal (no coupon). Empty when no method ships there (or the store has
    none). With ``method_id``, only that method.

    Raises:
        ValidationFailed: ``units`` is empty (field ``items``): nothing to ship is nothing to quote, as an empty cart
            is no order (API.md ``POST /orders``: empty cart → 422).
        NotFound: a unit is not for sale (field ``product_id``).
        ValidationFailed: a product with variants without ``variant_id``; ``method_id`` unknown, inactive or not
            shipping to ``country`` (field ``method_id``).
    """
    if not units:
        raise ValidationFailed(
            "Nothing to ship: the cart is empty (or holds nothing still for sale). Send items, or add to the cart.",
            field="items",
        )
    country = country.upper()
    sellable = await require_units(session, [(product_id, variant_id) for product_id, variant_id, _ in units])
    lines = [pricing.Line((p, v), sellable[(p, v)].unit_price, quantity) for p, v, quantity in units]
    subtotal = pricing.price(lines).subtotal
    weight = rules.weight_kg((sellable[(p, v)].weight_grams, quantity) for p, v, quantity in units)
    methods = await repository.active_methods(session)
    if method_id is not None:
        methods = [candidate for candidate in methods if candidate.id == method_id]
        if not methods:
            raise ValidationFailed(f"No shipping method {method_id} is offered.", field="method_id")
        if not rules.ships_to(methods[0].countries, country):
            raise ValidationFailed(f"{methods[0].name} does not ship to {country}.", field="method_id")
    candidates = [candidate for candidate in methods if rules.ships_to(candidate.countries, country)]
    return _options(candidates, weight=weight, subtotal=subtotal, now=clock.now())


# --- admin: methods ----------------------------------------------------------------------------------------------


async def list_methods(
    session: AsyncSession, *, include_inactive: bool, page: int, limit: int
) -> Paged[ShippingMethod]:
    """A page of methods by name; inactive ones only with ``include_inactive`` (admins)."""
    return await repository.methods_page(session, include_inactive=include_inactive, page=page, limit=limit)


async def has_methods(session: AsyncSession) -> bool:
    """Whether the store has any shipping method, active or not (the demo loader seeds none then)."""
    return await repository.has_methods(session)


async def get_method(session: AsyncSession, method_id: uuid.UUID) -> ShippingMethod:
    """The method, active or not. Raises :class:`ShippingMethodNotFound`."""
    found = await repository.method(session, method_id)
    if found is None:
        raise ShippingMethodNotFound(f"No shipping method {method_id}.")
    return found


def _check_window(min_days: int, max_days: int) -> None:
    if max_days < min_days:
        raise ValidationFailed("max_days must be at least min_days.", field="max_days")


async def create_method(session: AsyncSession, body: ShippingMethodCreate) -> ShippingMethod:
    """Create a method. Raises :class:`ValidationFailed` when ``max_days`` is below ``min_days``."""
    _check_window(body.min_days, body.max_days)
    created = ShippingMethod(id=clock.new_id(), **body.model_dump())
    repository.add(session, created)
    await session.flush()
    return created


async def update_method(session: AsyncSession, method_id: uuid.UUID, body: ShippingMethodUpdate) -> ShippingMethod:
    """Apply a partial update (fields not sent keep their value; ``free_over`` may be cleared with null).

    Raises:
        ShippingMethodNotFound: no such method.
        ValidationFailed: another field set to null, or ``max_days`` below ``min_days`` after the change.
    """
    found = await get_method(session, method_id)
    changes = body.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None and field != "free_over":
            raise ValidationFailed(f"{field} cannot be null.", field=field)
    _check_window(changes.get("min_days", found.min_days), changes.get("max_days", found.max_days))
    for field, value in changes.items():
        setattr(found, field, value)
    await session.flush()
    return found


async def delete_method(session: AsyncSession, method_id: uuid.UUID) -> None:
    """Delete the method for good (orders keep their snapshot). Raises :class:`ShippingMethodNotFound`."""
    await repository.remove(session, await get_method(session, method_id))
    await session.flush()


# --- admin: tax rates --------------------------------------------------------------------------------------------


async def list_tax_rates(session: AsyncSession, *, page: int, limit: int) -> Paged[TaxRate]:
    """A page of the tax-rate table by country, each country's own row before its regions'."""
    return await repository.tax_rates_page(session, page=page, limit=limit)


async def replace_tax_rates(session: AsyncSession, rates: Sequence[TaxRateIn]) -> list[TaxRate]:
    """Replace the whole tax-rate table with ``rates`` (an empty list removes every rate: no tax anywhere).

    Returns:
        The new table, by country, each country's own row first.

    Raises:
        ValidationFailed: the same country and region twice (regions compare case-insensitively), naming the
            second row (``rates.<index>.region``).
    """
    seen: set[tuple[str, str | None]] = set()
    for index, row in enumerate(rates):
        key = (row.country, row.region.casefold() if row.region else None)
        if key in seen:
            where = f"{row.country} / {row.region}" if row.region else row.country
            raise ValidationFailed(f"{where} is listed twice.", loc=["body", "rates", index, "region"])
        seen.add(key)
    now = clock.now()
    table = [
        TaxRate(
            id=clock.new_id(), country=row.country, region=row.region, rate=row.rate, created_at=now, updated_at=now
        )
        for row in rates
    ]
    return await repository.replace_tax_rates(session, table)


# --- helpers -----------------------------------------------------------------------------------------------------


async def _weight(session: AsyncSession, units: Units, known: Mapping[UnitKey, Unit]) -> Decimal:
    missing = [(product_id, variant_id) for product_id, variant_id, _ in units if (product_id, variant_id) not in known]
    found = {**known, **(await sellable_units(session, missing))} if missing else known
    parcels = []
    for product_id, variant_id, quantity in units:
        unit = found.get((product_id, variant_id))
        parcels.append((unit.weight_grams if unit is not None else None, quantity))
    return rules.weight_kg(parcels)


def _options(
    methods: Sequence[ShippingMethod], *, weight: Decimal, subtotal: Decimal | None, now: datetime
) -> list[Option]:
    """``methods`` priced for a parcel of ``weight`` kg, cheapest first (what the customer pays, then the latest
    delivery day, then the name). ``free_over`` is applied by the pricing function when ``subtotal`` (after
    discount) is known."""
    today = now.date()
    options = []
    for method in methods:
        rate = rules.cost(method.base_rate, method.per_kg_rate, weight)
        cost = rate
        if subtotal is not None:
            terms = pricing.Shipping(rate, method.free_over)
            cost = pricing.price([pricing.Line("subtotal", subtotal, 1)], shipping=terms).shipping_total
        options.append(Option(method, rate, cost, rules.delivery_window(today, method.min_days, method.max_days)))
    options.sort(key=lambda option: (option.cost, option.delivery.max_date, option.method.name, option.method.id))
    return options


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def _snapshot(option: Option, weight: Decimal) -> dict[str, Any]:
    method = option.method
    return {
        "id": str(method.id),
        "name": method.name,
        "carrier": method.carrier,
        "base_rate": _money(method.base_rate),
        "per_kg_rate": _money(method.per_kg_rate),
        "free_over": _money(method.free_over),
        "min_days": method.min_days,
        "max_days": method.max_days,
        "weight_kg": format(weight, "f"),
        "rate": _money(option.rate),
        "estimated_delivery": {
            "min_date": option.delivery.min_date.isoformat(),
            "max_date": option.delivery.max_date.isoformat(),
        },
    }
