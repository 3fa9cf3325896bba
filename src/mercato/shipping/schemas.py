"""Request and response bodies of the shipping and tax-rate endpoints (API.md "Shipping", "Cart" → Pricing).

Money is a JSON number or string with at most two decimals in requests and a two-decimal string in responses
(the ``Money`` types of the coupon and order bodies), next to the store ``currency``. A tax ``rate`` is a fraction
(``"0.0825"`` = 8.25 %), at most six decimals, ``0 ≤ rate < 1``. Countries are ISO 3166-1 alpha-2 codes, in any
case in requests and upper case in responses. Dates are ISO 8601 (``2026-12-08``).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, field_serializer

from mercato.identity import rules as identity_rules
from mercato.orders.schemas import Money, Quantity
from mercato.promotions.schemas import Money as MoneyIn
from mercato.schemas import RequestModel, ResponseModel
from mercato.shipping.models import ShippingMethod, TaxRate


def _country(value: str) -> str:
    code = identity_rules.normalize_country(value)
    if code is None:
        raise ValueError("Not an ISO 3166-1 alpha-2 country code.")
    return code


def _distinct(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


#: An ISO 3166-1 alpha-2 country code, normalised to upper case (``gb`` → ``GB``); anything else is a 422.
CountryCode = Annotated[str, Field(min_length=2, max_length=2, examples=["US"]), AfterValidator(_country)]
Countries = Annotated[
    list[CountryCode],
    Field(max_length=300, description="ISO 3166-1 alpha-2 codes it ships to; empty = worldwide."),
    AfterValidator(_distinct),
]
Name = Annotated[str, Field(min_length=1, max_length=100)]
Days = Annotated[int, Field(strict=True, ge=0, le=365)]
Region = Annotated[str, Field(min_length=1, max_length=100)]
Rate = Annotated[
    Decimal,
    Field(
        ge=0,
        lt=1,
        max_digits=7,
        decimal_places=6,
        description="A fraction: `0.0825` is 8.25 %. 0 ≤ rate < 1, at most six decimals.",
        examples=["0.0825"],
    ),
]

_METHOD_ID = "0193a1c2-5e00-7b8a-9c1d-2e3f4a5b6c01"
_PRODUCT = "0193a1c2-7d4e-7b8a-9c1d-2e3f4a5b6c7d"
_METHOD_TERMS: dict[str, Any] = {
    "name": "Express",
    "carrier": "DHL Express",
    "base_rate": "14.99",
    "per_kg_rate": "2.50",
    "free_over": None,
    "min_days": 1,
    "max_days": 2,
    "countries": ["US", "CA", "GB", "DE", "FR"],
    "is_active": True,
}


def _fraction(value: Decimal) -> str:
    """A rate as a plain decimal string without trailing zeros: ``0.082500`` → ``"0.0825"``, 0 → ``"0"``."""
    return format(value.normalize(), "f")


# --- methods -------------------------------------------------------------------------------------------------------


class ShippingMethodCreate(RequestModel):
    """``POST /shipping/methods``: cost = ``base_rate + per_kg_rate × weight in kg`` (rounded half-even to the cent),
    free when the subtotal after discount reaches ``free_over``; delivered ``min_days``–``max_days`` business days
    after the order (weekends skipped)."""

    model_config = RequestModel.model_config | ConfigDict(json_schema_extra={"examples": [_METHOD_TERMS]})

    name: Name
    carrier: Name
    base_rate: MoneyIn
    per_kg_rate: MoneyIn = Decimal("0")
    free_over: MoneyIn | None = Field(
        default=None, description="Free when the subtotal after discount is at least this; null = never free."
    )
    min_days: Days
    max_days: Days = Field(description="At least `min_days`.")
    countries: Countries = Field(default_factory=list)
    is_active: bool = True


class ShippingMethodUpdate(RequestModel):
    """``PATCH``/``PUT /shipping/methods/{id}``: fields left out keep their value; only ``free_over`` may be set to
    null."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"base_rate": "15.99", "countries": ["US", "CA"], "is_active": False}]}
    )

    name: Name | None = None
    carrier: Name | None = None
    base_rate: MoneyIn | None = None
    per_kg_rate: MoneyIn | None = None
    free_over: MoneyIn | None = None
    min_days: Days | None = None
    max_days: Days | None = None
    countries: Countries | None = None
    is_active: bool | None = None


class ShippingMethodRead(ResponseModel):
    """A shipping method. ``countries`` empty = worldwide; amounts in the store ``currency``."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _METHOD_ID,
                    **_METHOD_TERMS,
                    "currency": "USD",
                    "created_at": "2026-12-03T10:00:00Z",
                    "updated_at": "2026-12-03T10:00:00Z",
                }
            ]
        }
    )

    id: uuid.UUID
    name: str
    carrier: str
    base_rate: Money
    per_kg_rate: Money
    free_over: Money | None
    min_days: int
    max_days: int
    countries: list[str]
    is_active: bool
    currency: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, shipping_method: ShippingMethod, currency: str) -> ShippingMethodRead:
        """The method as the API shows it; ``currency`` is the store currency."""
        columns = {column.key: getattr(shipping_method, column.key) for column in ShippingMethod.__table__.columns}
        return cls.model_validate({**columns, "currency": currency})


# --- quotes --------------------------------------------------------------------------------------------------------


class ShippingItem(RequestModel):
    """A unit to ship: a product (``variant_id`` for a product sold by variant) and 1–100 units."""

    product_id: uuid.UUID
    variant_id: uuid.UUID | None = None
    quantity: Quantity


class ShippingCalculate(RequestModel):
    """``POST /shipping/calculate``: the destination and what to ship (``items``; when omitted, the caller's
    cart). ``method_id`` limits the answer to that method."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {"country": "US", "postal_code": "94105", "items": [{"product_id": _PRODUCT, "quantity": 2}]},
                {"country": "GB"},
            ]
        }
    )

    country: CountryCode
    postal_code: Annotated[str, Field(max_length=20)] | None = Field(
        default=None, description="Accepted for zone-priced carriers; the built-in rates do not depend on it."
    )
    items: list[ShippingItem] | None = Field(default=None, min_length=1, max_length=100)
    method_id: uuid.UUID | None = None


class DeliveryEstimate(ResponseModel):
    """First and last expected delivery day (business days from today, weekends skipped)."""

    min_date: date
    max_date: date


class ShippingQuote(ResponseModel):
    """What a method costs for this destination and parcel: ``cost`` is ``"0.00"`` when the subtotal reaches the
    method's ``free_over``."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "method_id": _METHOD_ID,
                    "name": "Express",
                    "carrier": "DHL Express",
                    "cost": "17.49",
                    "currency": "USD",
                    "estimated_delivery": {"min_date": "2026-12-07", "max_date": "2026-12-08"},
                }
            ]
        }
    )

    method_id: uuid.UUID
    name: str
    carrier: str
    cost: Money
    currency: str
    estimated_delivery: DeliveryEstimate


# --- tax rates -----------------------------------------------------------------------------------------------------


class TaxRateIn(RequestModel):
    """A row of the tax-rate table: a ``country``'s rate, or one of its regions' (``region`` as written in
    addresses, e.g. ``CA`` or ``California``; matched case-insensitively)."""

    country: CountryCode
    region: Region | None = None
    rate: Rate


class TaxRateTable(RequestModel):
    """``PUT /admin/tax-rates``: the whole new table (at most 1000 rows); every row not listed is removed."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "rates": [
                        {"country": "US", "rate": "0.05"},
                        {"country": "US", "region": "CA", "rate": "0.0825"},
                        {"country": "DE", "rate": "0.19"},
                    ]
                }
            ]
        }
    )

    rates: list[TaxRateIn] = Field(max_length=1000)


_RATE_EXAMPLE: dict[str, Any] = {
    "country": "US",
    "region": "CA",
    "rate": "0.0825",
    "updated_at": "2026-12-03T10:00:00Z",
}


class TaxRateRead(ResponseModel):
    """A row of the tax-rate table; ``rate`` is a fraction as a decimal string."""

    model_config = ResponseModel.model_config | ConfigDict(json_schema_extra={"examples": [_RATE_EXAMPLE]})

    country: str
    region: str | None
    rate: Decimal
    updated_at: datetime

    @field_serializer("rate")
    def _ser(self, value: Decimal) -> str:
        return _fraction(value)

    @classmethod
    def of(cls, row: TaxRate) -> TaxRateRead:
        """The row as the API shows it."""
        return cls.model_validate(row)


class TaxRateTableRead(ResponseModel):
    """The whole tax-rate table, by country (each country's own row before its regions')."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {"rates": [{**_RATE_EXAMPLE, "region": None, "rate": "0.05"}, _RATE_EXAMPLE]},
            ]
        }
    )

    rates: list[TaxRateRead]
