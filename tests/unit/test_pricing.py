"""The pricing function (API.md "Cart" → Pricing; ``mercato.cart.rules.price``): properties over generated carts,
coupons, shipping and tax, plus worked examples of half-even rounding, ``free_over`` and the tax base."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mercato.cart.rules import Discount, Line, Shipping, price

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

amounts = st.decimals(min_value=0, max_value=Decimal("5000.00"), places=2, allow_nan=False, allow_infinity=False)
positive_amounts = st.decimals(
    min_value=Decimal("0.01"), max_value=Decimal("10000.00"), places=2, allow_nan=False, allow_infinity=False
)
percentages = st.decimals(min_value=0, max_value=100, places=2, allow_nan=False, allow_infinity=False)
tax_rates = st.decimals(min_value=0, max_value=Decimal("0.3"), places=4, allow_nan=False, allow_infinity=False)
lines_strategy = st.lists(
    st.builds(Line, key=st.uuids(), unit_price=amounts, quantity=st.integers(min_value=1, max_value=100)),
    min_size=0,
    max_size=12,
    unique_by=lambda line: line.key,
)
discounts = st.one_of(
    st.none(),
    st.builds(Discount, type=st.just("percentage"), value=percentages),
    st.builds(Discount, type=st.just("fixed"), value=positive_amounts),
)
shippings = st.one_of(st.none(), st.builds(Shipping, rate=amounts, free_over=st.one_of(st.none(), amounts)))


def half_even(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


@given(lines=lines_strategy, discount=discounts, shipping=shippings, tax_rate=tax_rates)
def test_totals_hold_together(
    lines: list[Line], discount: Discount | None, shipping: Shipping | None, tax_rate: Decimal
) -> None:
    totals = price(lines, discount=discount, shipping=shipping, tax_rate=tax_rate)
    for amount in (totals.subtotal, totals.discount_total, totals.shipping_total, totals.tax_total, totals.total):
        assert amount >= 0
        assert amount == amount.quantize(CENT)
    assert totals.discount_total <= totals.subtotal
    assert [p.key for p in totals.lines] == [line.key for line in lines]
    assert all(p.line_total == half_even(p.unit_price * p.quantity) for p in totals.lines)
    assert totals.subtotal == sum((p.line_total for p in totals.lines), ZERO)
    assert sum((p.discount for p in totals.lines), ZERO) == totals.discount_total
    assert all(ZERO <= p.discount <= p.line_total for p in totals.lines)
    assert totals.total == totals.subtotal - totals.discount_total + totals.shipping_total + totals.tax_total
    after_discount = totals.subtotal - totals.discount_total
    assert totals.tax_total == half_even(tax_rate * (after_discount + totals.shipping_total))


@given(lines=lines_strategy, value=positive_amounts)
def test_fixed_coupon_takes_its_value_capped_at_the_subtotal(lines: list[Line], value: Decimal) -> None:
    totals = price(lines, discount=Discount("fixed", value))
    assert totals.discount_total == min(value, totals.subtotal)


@given(lines=lines_strategy, value=percentages)
def test_percentage_coupon_takes_its_share_of_the_subtotal(lines: list[Line], value: Decimal) -> None:
    totals = price(lines, discount=Discount("percentage", value))
    assert totals.discount_total == half_even(totals.subtotal * value / 100)


@given(lines=lines_strategy, discount=discounts)
def test_line_shares_are_proportional_to_within_a_cent(lines: list[Line], discount: Discount | None) -> None:
    totals = price(lines, discount=discount)
    if totals.subtotal == 0:
        assert all(p.discount == 0 for p in totals.lines)
        return
    for p in totals.lines:
        exact = totals.discount_total * p.line_total / totals.subtotal
        assert abs(p.discount - exact) < CENT


@given(lines=lines_strategy, shipping=shippings, discount=discounts)
def test_free_over_compares_the_discounted_subtotal(
    lines: list[Line], shipping: Shipping | None, discount: Discount | None
) -> None:
    totals = price(lines, discount=discount, shipping=shipping)
    after_discount = totals.subtotal - totals.discount_total
    free = shipping is not None and shipping.free_over is not None and after_discount >= shipping.free_over
    if shipping is None or free:
        assert totals.shipping_total == 0
    else:
        assert totals.shipping_total == shipping.rate


def test_shipping_is_not_discounted_and_free_over_uses_the_subtotal_after_discount() -> None:
    lines = [Line("a", Decimal("60.00"), 1), Line("b", Decimal("40.00"), 1)]
    ten_off = Discount("fixed", Decimal("10.00"))
    charged = price(lines, discount=ten_off, shipping=Shipping(Decimal("5.00"), free_over=Decimal("95.00")))
    assert (charged.subtotal, charged.discount_total, charged.shipping_total, charged.total) == (
        Decimal("100.00"),
        Decimal("10.00"),
        Decimal("5.00"),
        Decimal("95.00"),
    )
    free = price(lines, discount=ten_off, shipping=Shipping(Decimal("5.00"), free_over=Decimal("90.00")))
    assert (free.shipping_total, free.total) == (ZERO, Decimal("90.00"))
    hundred_off = price(lines, discount=Discount("percentage", Decimal(100)), shipping=Shipping(Decimal("5.00")))
    assert (hundred_off.discount_total, hundred_off.shipping_total, hundred_off.total) == (
        Decimal("100.00"),
        Decimal("5.00"),
        Decimal("5.00"),
    )


def test_tax_is_on_subtotal_minus_discount_plus_shipping() -> None:
    totals = price(
        [Line("a", Decimal("50.00"), 2)],
        discount=Discount("percentage", Decimal(10)),
        shipping=Shipping(Decimal("10.00")),
        tax_rate=Decimal("0.0825"),
    )
    # (100.00 - 10.00 + 10.00) × 0.0825 = 8.25
    assert (totals.subtotal, totals.discount_total, totals.tax_total, totals.total) == (
        Decimal("100.00"),
        Decimal("10.00"),
        Decimal("8.25"),
        Decimal("108.25"),
    )


@pytest.mark.parametrize(
    ("subtotal", "percent", "discount"),
    [
        ("0.20", "12.5", "0.02"),  # 0.025 → 0.02 (half to even)
        ("0.60", "12.5", "0.08"),  # 0.075 → 0.08
        ("0.10", "25", "0.02"),  # 0.025 → 0.02
        ("0.30", "25", "0.08"),  # 0.075 → 0.08
        ("0.35", "10", "0.04"),  # 0.035 → 0.04
        ("0.45", "10", "0.04"),  # 0.045 → 0.04
        ("19.99", "15", "3.00"),  # 2.9985 → 3.00
    ],
)
def test_percentage_discount_rounds_half_even(subtotal: str, percent: str, discount: str) -> None:
    totals = price([Line("a", Decimal(subtotal), 1)], discount=Discount("percentage", Decimal(percent)))
    assert totals.discount_total == Decimal(discount)


@pytest.mark.parametrize(("base", "tax"), [("0.50", "0.02"), ("0.70", "0.04"), ("0.30", "0.02"), ("0.90", "0.04")])
def test_tax_rounds_half_even(base: str, tax: str) -> None:
    # 5 % of 0.50 = 0.025 → 0.02; of 0.70 = 0.035 → 0.04; of 0.30 = 0.015 → 0.02; of 0.90 = 0.045 → 0.04
    assert price([Line("a", Decimal(base), 1)], tax_rate=Decimal("0.05")).tax_total == Decimal(tax)


def test_discount_shares_use_largest_remainder_with_ties_to_the_earlier_line() -> None:
    lines = [Line(k, Decimal("10.00"), 1) for k in ("a", "b", "c")]
    totals = price(lines, discount=Discount("fixed", Decimal("10.00")))
    # 3.333… each: one cent left over goes to the first line
    assert [p.discount for p in totals.lines] == [Decimal("3.34"), Decimal("3.33"), Decimal("3.33")]
    uneven = price(
        [Line("a", Decimal("1.00"), 1), Line("b", Decimal("2.00"), 1)], discount=Discount("fixed", Decimal("1.00"))
    )
    # exact 0.333… and 0.666…: b has the larger remainder
    assert [p.discount for p in uneven.lines] == [Decimal("0.33"), Decimal("0.67")]


@pytest.mark.parametrize(
    ("lines", "discount", "message"),
    [
        ([Line("a", Decimal("-1.00"), 1)], None, "invalid line"),
        ([Line("a", Decimal("1.00"), 0)], None, "invalid line"),
        ([Line("a", Decimal("1.00"), 1)], Discount("percentage", Decimal("100.01")), "between 0 and 100"),
        ([Line("a", Decimal("1.00"), 1)], Discount("percentage", Decimal("-1")), "between 0 and 100"),
        ([Line("a", Decimal("1.00"), 1)], Discount("fixed", Decimal("-0.01")), "not negative"),
    ],
)
def test_invalid_input_is_refused(lines: list[Line], discount: Discount | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        price(lines, discount=discount)


def test_empty_cart_costs_nothing_but_shipping() -> None:
    totals = price([], discount=Discount("fixed", Decimal("5.00")), shipping=Shipping(Decimal("4.99")))
    assert (totals.subtotal, totals.discount_total, totals.shipping_total, totals.total) == (
        ZERO,
        ZERO,
        Decimal("4.99"),
        Decimal("4.99"),
    )
