"""The pricing function: the one calculation of lines, discount, shipping, tax and total that the cart and the
order share (API.md "Cart" → Pricing; ARCHITECTURE.md "one function").

Rules:
- prices are tax-exclusive; a line's total is ``unit_price × quantity``;
- a percentage coupon takes ``value`` % of the subtotal, a fixed coupon takes ``value`` capped at the subtotal;
  the discount is allocated to lines in proportion to their totals (largest remainder, so the shares add up to
  the discount exactly), for partial refunds;
- shipping is never discounted; a method's ``free_over`` compares the subtotal *after* discount;
- tax = ``tax_rate × (subtotal − discount + shipping)``;
- every amount is rounded half-even to the currency's minor unit (cents), at each line and each total.

All amounts are ``Decimal`` in the store currency with two decimals; nothing here does I/O or reads the clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Literal

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
HUNDRED = Decimal(100)


def cents(amount: Decimal) -> Decimal:
    """Round ``amount`` half-even to the minor unit (two decimals)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Line:
    """A priced line: ``key`` identifies it to the caller (a cart item id, a ``(product, variant)`` pair),
    ``unit_price`` ≥ 0 with two decimals, ``quantity`` ≥ 1."""

    key: Hashable
    unit_price: Decimal
    quantity: int


@dataclass(frozen=True)
class Discount:
    """A coupon's terms as the pricing function needs them: ``percentage`` (``value`` 0–100) or ``fixed``
    (``value`` ≥ 0, an amount). Eligibility (dates, limits, minimum purchase) is the promotions domain's job."""

    type: Literal["percentage", "fixed"]
    value: Decimal


@dataclass(frozen=True)
class Shipping:
    """The chosen shipping method's ``rate`` for this order (already weight-based) and its ``free_over``
    threshold (compared with the subtotal after discount; None when the method is never free)."""

    rate: Decimal
    free_over: Decimal | None = None


@dataclass(frozen=True)
class PricedLine:
    """A line with its ``line_total`` (``unit_price × quantity``) and its ``discount`` share."""

    key: Hashable
    unit_price: Decimal
    quantity: int
    line_total: Decimal
    discount: Decimal


@dataclass(frozen=True)
class Totals:
    """The result: priced lines and the order-level totals (``total = subtotal − discount + shipping + tax``)."""

    lines: tuple[PricedLine, ...]
    subtotal: Decimal
    discount_total: Decimal
    shipping_total: Decimal
    tax_total: Decimal
    total: Decimal


def price(
    lines: Sequence[Line],
    *,
    discount: Discount | None = None,
    shipping: Shipping | None = None,
    tax_rate: Decimal = ZERO,
) -> Totals:
    """Price ``lines`` with an optional coupon ``discount``, ``shipping`` method and ``tax_rate`` (a fraction,
    e.g. ``Decimal("0.0825")``; 0 when no rate is configured for the destination).

    Raises:
        ValueError: a negative price, a quantity below 1, a percentage outside 0–100 or a negative fixed value.
    """
    for line in lines:
        if line.unit_price < 0 or line.quantity < 1:
            raise ValueError(f"invalid line {line!r}")
    totals = [cents(line.unit_price * line.quantity) for line in lines]
    subtotal = cents(sum(totals, ZERO))
    discount_total = cents(_discount_amount(discount, subtotal)) if discount else ZERO
    shares = _allocate(discount_total, totals)
    after_discount = subtotal - discount_total
    shipping_total = ZERO
    if shipping is not None and not (shipping.free_over is not None and after_discount >= shipping.free_over):
        shipping_total = cents(shipping.rate)
    tax_total = cents(tax_rate * (after_discount + shipping_total))
    priced = tuple(
        PricedLine(line.key, cents(line.unit_price), line.quantity, total, share)
        for line, total, share in zip(lines, totals, shares, strict=True)
    )
    return Totals(
        lines=priced,
        subtotal=subtotal,
        discount_total=discount_total,
        shipping_total=shipping_total,
        tax_total=tax_total,
        total=after_discount + shipping_total + tax_total,
    )


def _discount_amount(discount: Discount, subtotal: Decimal) -> Decimal:
    if discount.type == "percentage":
        if not ZERO <= discount.value <= HUNDRED:
            raise ValueError("a percentage discount is between 0 and 100")
        return min(subtotal, subtotal * discount.value / HUNDRED)
    if discount.value < 0:
        raise ValueError("a fixed discount is not negative")
    return min(subtotal, discount.value)


def _allocate(amount: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """Split ``amount`` (two decimals) over ``weights`` in proportion, in whole cents that add up to ``amount``
    exactly (largest remainder; ties go to the earlier line)."""
    whole = sum(weights, ZERO)
    if amount == 0 or whole == 0:
        return [ZERO for _ in weights]
    exact = [amount * weight / whole for weight in weights]
    shares = [share.quantize(CENT, rounding=ROUND_FLOOR) for share in exact]
    left = int((amount - sum(shares, ZERO)) / CENT)
    by_remainder = sorted(range(len(weights)), key=lambda index: shares[index] - exact[index])
    for index in by_remainder[:left]:
        shares[index] += CENT
    return shares
