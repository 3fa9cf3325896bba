"""Pure shipping rules: a method's cost for a parcel weight, the estimated delivery window in business days, and
whether a method ships to a country. No I/O, no clock: callers pass ``today``.

Whether a method is free for an order (its ``free_over`` threshold) is decided by the one pricing function,
:func:`mercato.cart.rules.price`, not here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from mercato.cart.rules import cents

GRAMS_PER_KG = Decimal(1000)
SATURDAY = 5  # date.weekday(): Monday is 0


@dataclass(frozen=True)
class DeliveryWindow:
    """The first and last day the parcel is expected (both inclusive, business days)."""

    min_date: date
    max_date: date


def weight_kg(parcels: Iterable[tuple[int | None, int]]) -> Decimal:
    """The total weight in kg of ``(weight_grams, quantity)`` pairs; an unknown weight (None) counts as 0."""
    grams = sum((weight or 0) * quantity for weight, quantity in parcels)
    return Decimal(grams) / GRAMS_PER_KG


def cost(base_rate: Decimal, per_kg_rate: Decimal, weight: Decimal) -> Decimal:
    """``base_rate + per_kg_rate × weight`` (kg), rounded half-even to the cent."""
    return cents(base_rate + per_kg_rate * weight)


def is_business_day(day: date) -> bool:
    """Monday to Friday (public holidays are not known)."""
    return day.weekday() < SATURDAY


def add_business_days(start: date, days: int) -> date:
    """``days`` business days after ``start``, skipping Saturdays and Sundays: Friday + 1 is Monday. A parcel
    ordered at the weekend is handed over on Monday, so counting then starts on Monday (Saturday + 0 and
    Sunday + 0 are Monday, Saturday + 1 is Tuesday).

    Raises:
        ValueError: ``days`` is negative.
    """
    if days < 0:
        raise ValueError("days is not negative")
    day = start
    while not is_business_day(day):
        day += timedelta(days=1)
    for _ in range(days):
        day += timedelta(days=1)
        while not is_business_day(day):
            day += timedelta(days=1)
    return day


def delivery_window(today: date, min_days: int, max_days: int) -> DeliveryWindow:
    """When a parcel sent on ``today`` arrives: ``min_days`` to ``max_days`` business days later."""
    return DeliveryWindow(add_business_days(today, min_days), add_business_days(today, max_days))


def ships_to(countries: Sequence[str], country: str) -> bool:
    """Whether a method limited to ``countries`` (ISO 3166-1 alpha-2, upper case; empty = worldwide) ships to
    ``country``."""
    return not countries or country.upper() in countries
