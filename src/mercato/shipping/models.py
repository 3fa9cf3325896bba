"""Shipping tables: ``shipping_methods`` (what a parcel costs and how long it takes, per method) and ``tax_rates``
(the admin tax-rate table of API.md "Cart" → Pricing).

Amounts (``base_rate``, ``per_kg_rate``, ``free_over``) are ``Decimal`` stored as integer cents (ADR 0003); a tax
``rate`` is a fraction (``0.0825`` = 8.25 %) stored as ``NUMERIC(7, 6)``. Orders keep a JSON snapshot of the method
they were placed with, so methods can change or disappear without touching placed orders.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import JSON, CheckConstraint, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mercato.db.base import Base, TimestampMixin, uuid_pk


class ShippingMethod(TimestampMixin, Base):
    """A way to ship: ``cost = base_rate + per_kg_rate × weight in kg`` (rounded half-even to the cent), free when
    the subtotal after discount reaches ``free_over`` (null: never free); delivered ``min_days``–``max_days``
    business days after the order. ``countries`` lists ISO 3166-1 alpha-2 codes; an empty list ships worldwide.
    Inactive methods are kept but never offered."""

    __tablename__ = "shipping_methods"
    __table_args__ = (
        CheckConstraint("base_rate >= 0 AND per_kg_rate >= 0", name="rates_not_negative"),
        CheckConstraint("free_over IS NULL OR free_over >= 0", name="free_over_not_negative"),
        CheckConstraint("min_days >= 0 AND max_days >= min_days", name="delivery_window"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(100))
    carrier: Mapped[str] = mapped_column(String(100))
    base_rate: Mapped[Decimal]
    per_kg_rate: Mapped[Decimal] = mapped_column(default=Decimal("0"))
    free_over: Mapped[Decimal | None]
    min_days: Mapped[int]
    max_days: Mapped[int]
    countries: Mapped[list[str]] = mapped_column(JSON, default=list)
    is_active: Mapped[bool] = mapped_column(default=True)


class TaxRate(TimestampMixin, Base):
    """The tax rate of a destination: a whole ``country`` (``region`` null) or one of its regions (a state or
    province, as written in addresses; matched case-insensitively). A region's row wins over its country's row.
    ``rate`` is a fraction, ``0 ≤ rate < 1``."""

    __tablename__ = "tax_rates"
    __table_args__ = (
        UniqueConstraint("country", "region"),
        CheckConstraint("rate >= 0 AND rate < 1", name="rate_is_fraction"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    country: Mapped[str] = mapped_column(String(2))
    region: Mapped[str | None] = mapped_column(String(100))
    rate: Mapped[Decimal] = mapped_column(Numeric(7, 6))
