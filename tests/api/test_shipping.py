"""Shipping and tax: the pure rules (weight-based cost, business days), shipping methods (admin only to change,
the public sees active ones), quotes for items and for the cart (weights, ``free_over``, countries, cheapest
first, delivery windows), the admin tax-rate table, cart totals for a destination, and the demo store's methods."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mercato.cart.models import Cart
from mercato.demo import loader
from mercato.platform import clock
from mercato.platform.context import Services
from mercato.shipping import rules
from mercato.shipping.models import ShippingMethod, TaxRate
from tests.conftest import bearer, make_admin, register

METHODS = "/api/v1/shipping/methods"
CALCULATE = "/api/v1/shipping/calculate"
TAX_RATES = "/api/v1/admin/tax-rates"
CART = "/api/v1/cart"
#: A Friday afternoon (UTC): delivery windows counted from it skip the weekend.
FRIDAY = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
STANDARD: dict[str, Any] = {
    "name": "Standard",
    "carrier": "Mercato Post",
    "base_rate": "4.99",
    "per_kg_rate": "1.00",
    "free_over": "75.00",
    "min_days": 3,
    "max_days": 7,
    "countries": [],
}
EXPRESS: dict[str, Any] = {
    "name": "Express",
    "carrier": "DHL Express",
    "base_rate": "14.99",
    "per_kg_rate": "2.50",
    "min_days": 1,
    "max_days": 2,
    "countries": ["us", "CA", "GB", "DE", "FR"],
}


@pytest.fixture
async def admin(services: Services, client: httpx.AsyncClient) -> dict[str, str]:
    headers = bearer(await make_admin(services, client))
    client.cookies.clear()  # signing in set cookies: requests without headers stay anonymous
    return headers


async def customer(client: httpx.AsyncClient) -> dict[str, str]:
    """A new customer's bearer header (the client's cookies stay anonymous)."""
    headers = bearer(await register(client))
    client.cookies.clear()
    return headers


@contextmanager
def on_friday() -> Iterator[None]:
    """Business rules see :data:`FRIDAY` as now, inside the block only (sign in before: a token issued on that
    Friday would have expired long ago)."""
    clock.set_clock(lambda: FRIDAY)
    try:
        yield
    finally:
        clock.set_clock(None)


async def product(
    client: httpx.AsyncClient, admin: dict[str, str], *, price: str = "10.00", weight_grams: int | None = None
) -> str:
    body: dict[str, Any] = {"name": f"Thing {uuid.uuid4().hex[:6]}", "price": price, "status": "active", "stock": 50}
    if weight_grams is not None:
        body["weight_grams"] = weight_grams
    response = await client.post("/api/v1/products", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def method(client: httpx.AsyncClient, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await client.post(METHODS, json=fields, headers=admin)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def tax_rates(client: httpx.AsyncClient, admin: dict[str, str], *rows: dict[str, Any]) -> None:
    response = await client.put(TAX_RATES, json={"rates": list(rows)}, headers=admin)
    assert response.status_code == 200, response.text


def item(product_id: str, quantity: int = 1) -> dict[str, Any]:
    return {"product_id": product_id, "quantity": quantity}


def quotes(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.text
    return [(quote["name"], quote["cost"]) for quote in response.json()["data"]]


def error_locs(response: httpx.Response) -> list[list[Any]]:
    return [error["loc"] for error in response.json()["errors"]]


async def count(services: Services, model: type) -> int:
    async with services.db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


# --- the rules (pure) ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        (date(2026, 11, 27), 1, date(2026, 11, 30)),  # Friday + 1 → Monday
        (date(2026, 11, 27), 0, date(2026, 11, 27)),  # Friday + 0 → Friday
        (date(2026, 11, 27), 3, date(2026, 12, 2)),  # Friday + 3 → Wednesday
        (date(2026, 11, 28), 0, date(2026, 11, 30)),  # Saturday: handed over on Monday
        (date(2026, 11, 28), 1, date(2026, 12, 1)),  # Saturday + 1 → Tuesday
        (date(2026, 11, 29), 2, date(2026, 12, 2)),  # Sunday + 2 → Wednesday
        (date(2026, 11, 30), 5, date(2026, 12, 7)),  # Monday + 5 → next Monday
        (date(2026, 12, 2), 10, date(2026, 12, 16)),  # Wednesday + 10 → Wednesday two weeks later
    ],
)
def test_business_days_skip_weekends(start: date, days: int, expected: date) -> None:
    assert rules.add_business_days(start, days) == expected


def test_delivery_window_from_a_friday() -> None:
    window = rules.delivery_window(date(2026, 11, 27), 3, 7)

    assert (window.min_date, window.max_date) == (date(2026, 12, 2), date(2026, 12, 8))


def test_cost_is_base_plus_per_kg_rounded_half_even() -> None:
    assert rules.weight_kg([(1500, 2), (None, 3), (250, 1)]) == Decimal("3.25")
    assert rules.cost(Decimal("4.99"), Decimal("1.00"), Decimal("3.25")) == Decimal("8.24")
    assert rules.cost(Decimal("0.00"), Decimal("0.25"), Decimal("0.05")) == Decimal("0.01")  # 0.0125 → 0.01
    assert rules.cost(Decimal("0.00"), Decimal("0.25"), Decimal("0.15")) == Decimal("0.04")  # 0.0375 → 0.04
    assert rules.cost(Decimal("14.99"), Decimal("2.50"), Decimal("0")) == Decimal("14.99")


def test_empty_country_list_ships_worldwide() -> None:
    assert rules.ships_to([], "JP")
    assert rules.ships_to(["US", "CA"], "us")
    assert not rules.ships_to(["US", "CA"], "GB")


# --- methods ---------------------------------------------------------------------------------------------------


async def test_admin_manages_methods_and_the_public_sees_active_ones(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await method(client, admin, **EXPRESS)

    assert {key: created[key] for key in EXPRESS} == {**EXPRESS, "countries": ["US", "CA", "GB", "DE", "FR"]}
    assert created["free_over"] is None and created["is_active"] is True and created["currency"] == "USD"
    standard = await method(client, admin, **STANDARD)
    public = (await client.get(METHODS)).json()
    assert [m["name"] for m in public["data"]] == ["Express", "Standard"]
    assert public["pagination"] == {"page": 1, "limit": 20, "total": 2, "total_pages": 1}

    changed = await client.patch(
        f"{METHODS}/{standard['id']}", json={"base_rate": 5.49, "free_over": None}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["base_rate"], changed.json()["free_over"], changed.json()["max_days"]) == ("5.49", None, 7)
    hidden = await client.put(f"{METHODS}/{created['id']}", json={"is_active": False}, headers=admin)
    assert hidden.status_code == 200 and hidden.json()["is_active"] is False
    assert [m["name"] for m in (await client.get(METHODS)).json()["data"]] == ["Standard"]
    assert [m["name"] for m in (await client.get(METHODS, headers=admin)).json()["data"]] == ["Express", "Standard"]

    deleted = await client.delete(f"{METHODS}/{created['id']}", headers=admin)
    assert deleted.status_code == 204
    assert (await client.delete(f"{METHODS}/{created['id']}", headers=admin)).status_code == 404
    missing = await client.patch(f"{METHODS}/{created['id']}", json={"name": "Gone"}, headers=admin)
    assert missing.status_code == 404 and missing.json()["type"].endswith("/not-found")
    assert [m["name"] for m in (await client.get(METHODS, headers=admin)).json()["data"]] == ["Standard"]


async def test_only_admins_change_methods(client: httpx.AsyncClient, admin: dict[str, str], services: Services) -> None:
    existing = await method(client, admin, **STANDARD)
    buyer = await customer(client)

    for headers, status in (({}, 401), (buyer, 403)):
        assert (await client.post(METHODS, json=EXPRESS, headers=headers)).status_code == status
        url = f"{METHODS}/{existing['id']}"
        assert (await client.patch(url, json={"name": "Mine"}, headers=headers)).status_code == status
        assert (await client.delete(url, headers=headers)).status_code == status
        assert (await client.get(TAX_RATES, headers=headers)).status_code == status
        assert (await client.put(TAX_RATES, json={"rates": []}, headers=headers)).status_code == status

    assert await count(services, ShippingMethod) == 1
    assert (await client.get(METHODS, headers=admin)).json()["data"][0]["name"] == "Standard"


async def test_method_validation_names_the_field(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    cases: list[tuple[dict[str, Any], list[Any]]] = [
        ({**STANDARD, "min_days": 5, "max_days": 2}, ["body", "max_days"]),
        ({**STANDARD, "countries": ["US", "XX"]}, ["body", "countries", 1]),
        ({**STANDARD, "base_rate": "-1.00"}, ["body", "base_rate"]),
        ({**STANDARD, "per_kg_rate": "1.005"}, ["body", "per_kg_rate"]),
        ({**STANDARD, "name": ""}, ["body", "name"]),
        ({**STANDARD, "price": "1.00"}, ["body", "price"]),
    ]
    for body, loc in cases:
        response = await client.post(METHODS, json=body, headers=admin)
        assert response.status_code == 422, body
        assert loc in error_locs(response), response.text
    assert await count(services, ShippingMethod) == 0

    created = await method(client, admin, **STANDARD)
    url = f"{METHODS}/{created['id']}"
    too_short = await client.patch(url, json={"max_days": 2}, headers=admin)
    assert too_short.status_code == 422 and error_locs(too_short) == [["body", "max_days"]]
    nulled = await client.patch(url, json={"name": None}, headers=admin)
    assert nulled.status_code == 422 and error_locs(nulled) == [["body", "name"]]
    assert (await client.get(METHODS)).json()["data"][0]["max_days"] == 7


# --- quotes ----------------------------------------------------------------------------------------------------


async def test_calculate_prices_items_by_weight_cheapest_first(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await method(client, admin, **EXPRESS)
    standard = await method(client, admin, **STANDARD)
    heavy = await product(client, admin, price="12.00", weight_grams=1500)
    weightless = await product(client, admin, price="5.00")

    with on_friday():
        response = await client.post(CALCULATE, json={"country": "us", "items": [item(heavy, 2), item(weightless, 3)]})

    # 3 kg: Standard 4.99 + 1.00 × 3, Express 14.99 + 2.50 × 3; subtotal 39.00 is below Standard's 75.00
    assert quotes(response) == [("Standard", "7.99"), ("Express", "22.49")]
    first = response.json()["data"][0]
    assert first["method_id"] == standard["id"] and first["carrier"] == "Mercato Post" and first["currency"] == "USD"
    assert first["estimated_delivery"] == {"min_date": "2026-12-02", "max_date": "2026-12-08"}  # 3–7 days from Fri
    express = response.json()["data"][1]
    assert express["estimated_delivery"] == {"min_date": "2026-11-30", "max_date": "2026-12-01"}  # Mon–Tue
    assert response.json()["pagination"]["total"] == 2


async def test_free_over_makes_a_method_free_and_first(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await method(client, admin, **STANDARD)
    await method(client, admin, **{**EXPRESS, "base_rate": "3.00", "per_kg_rate": "0.00"})
    cheap = await product(client, admin, price="74.99", weight_grams=1000)
    dear = await product(client, admin, price="75.00", weight_grams=1000)

    below = await client.post(CALCULATE, json={"country": "GB", "items": [item(cheap)]})
    at = await client.post(CALCULATE, json={"country": "GB", "items": [item(dear)]})

    assert quotes(below) == [("Express", "3.00"), ("Standard", "5.99")]
    assert quotes(at) == [("Standard", "0.00"), ("Express", "3.00")]


async def test_calculate_offers_only_methods_that_ship_to_the_country(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    express = await method(client, admin, **EXPRESS)
    thing = await product(client, admin, weight_grams=0)

    assert quotes(await client.post(CALCULATE, json={"country": "DE", "items": [item(thing)]})) == [
        ("Express", "14.99")
    ]
    assert quotes(await client.post(CALCULATE, json={"country": "JP", "items": [item(thing)]})) == []
    await method(client, admin, **STANDARD)
    assert quotes(await client.post(CALCULATE, json={"country": "JP", "items": [item(thing)]})) == [
        ("Standard", "4.99")
    ]

    wrong = await client.post(CALCULATE, json={"country": "JP", "items": [item(thing)], "method_id": express["id"]})
    assert wrong.status_code == 422 and error_locs(wrong) == [["body", "method_id"]]
    unknown = await client.post(
        CALCULATE, json={"country": "DE", "items": [item(thing)], "method_id": str(uuid.uuid4())}
    )
    assert unknown.status_code == 422 and error_locs(unknown) == [["body", "method_id"]]
    only = await client.post(CALCULATE, json={"country": "DE", "items": [item(thing)], "method_id": express["id"]})
    assert quotes(only) == [("Express", "14.99")]


async def test_calculate_refuses_bad_input(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await method(client, admin, **STANDARD)

    bad_country = await client.post(CALCULATE, json={"country": "ZZ"})
    assert bad_country.status_code == 422 and error_locs(bad_country) == [["body", "country"]]
    unknown = await client.post(CALCULATE, json={"country": "US", "items": [item(str(uuid.uuid4()))]})
    assert unknown.status_code == 404
    no_items = await client.post(CALCULATE, json={"country": "US", "items": []})
    assert no_items.status_code == 422 and error_locs(no_items) == [["body", "items"]]
    extra = await client.post(CALCULATE, json={"country": "US", "weight": 3})
    assert extra.status_code == 422


async def test_calculate_uses_the_cart_when_items_are_omitted(
    client: httpx.AsyncClient, admin: dict[str, str], app: Any
) -> None:
    await method(client, admin, **STANDARD)
    thing = await product(client, admin, price="20.00", weight_grams=2000)
    buyer = await customer(client)
    added = await client.post(f"{CART}/items", json=item(thing, 2), headers=buyer)
    assert added.status_code == 201

    mine = await client.post(CALCULATE, json={"country": "FR", "postal_code": "75001"}, headers=buyer)

    assert quotes(mine) == [("Standard", "8.99")]  # 4 kg
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://testserver"
    ) as guest:
        no_cart = await guest.post(CALCULATE, json={"country": "FR"})
        assert no_cart.status_code == 422 and error_locs(no_cart) == [["body", "items"]]  # nothing to ship yet
        assert (await guest.post(f"{CART}/items", json=item(thing, 4))).status_code == 201
        assert quotes(await guest.post(CALCULATE, json={"country": "FR"})) == [("Standard", "0.00")]  # 80.00 ≥ 75


async def test_calculate_with_an_empty_cart_is_422_naming_items(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """Nothing to ship is nothing to quote (as ``"items": []`` is, and as an empty cart places no order)."""
    await method(client, admin, **STANDARD)
    await method(client, admin, **EXPRESS)
    thing = await product(client, admin, price="20.00", weight_grams=1000)
    buyer = await customer(client)

    def refused(response: httpx.Response) -> bool:
        """A 422 ``validation-error`` naming ``items``."""
        problem = response.json()
        return (response.status_code, problem["type"], error_locs(response)) == (
            422,
            "https://mercato.dev/problems/validation-error",
            [["body", "items"]],
        ) and "cart is empty" in problem["detail"]

    assert refused(await client.post(CALCULATE, json={"country": "US"}, headers=buyer))  # no cart at all
    assert refused(await client.post(CALCULATE, json={"country": "US"}))  # an anonymous caller without a cart
    carts = await count(services, Cart)
    added = await client.post(f"{CART}/items", json=item(thing, 1), headers=buyer)
    assert added.status_code == 201, added.text
    assert quotes(await client.post(CALCULATE, json={"country": "US"}, headers=buyer)) == [
        ("Standard", "5.99"),
        ("Express", "17.49"),
    ]
    [line] = added.json()["items"]
    assert (await client.delete(f"{CART}/items/{line['id']}", headers=buyer)).status_code in (200, 204)
    assert refused(await client.post(CALCULATE, json={"country": "US"}, headers=buyer))  # emptied
    # a cart whose only line is no longer for sale has nothing to ship either
    assert (await client.post(f"{CART}/items", json=item(thing, 1), headers=buyer)).status_code == 201
    assert (await client.delete(f"/api/v1/products/{thing}", headers=admin)).status_code == 204
    assert refused(await client.post(CALCULATE, json={"country": "US"}, headers=buyer))
    assert await count(services, Cart) == carts + 1  # the quotes created nothing: only the buyer's own cart


async def test_a_store_without_methods_quotes_nothing(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    thing = await product(client, admin)

    assert quotes(await client.post(CALCULATE, json={"country": "US", "items": [item(thing)]})) == []


# --- tax rates -------------------------------------------------------------------------------------------------


async def test_admin_replaces_the_tax_rate_table(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert (await client.get(TAX_RATES, headers=admin)).json()["data"] == []

    response = await client.put(
        TAX_RATES,
        json={
            "rates": [
                {"country": "us", "region": "CA", "rate": "0.0825"},
                {"country": "DE", "rate": 0.19},
                {"country": "US", "rate": "0.05"},
                {"country": "US", "region": "New York", "rate": "0.04"},
            ]
        },
        headers=admin,
    )

    assert response.status_code == 200, response.text
    expected = [("DE", None, "0.19"), ("US", None, "0.05"), ("US", "CA", "0.0825"), ("US", "New York", "0.04")]
    assert [(r["country"], r["region"], r["rate"]) for r in response.json()["rates"]] == expected
    listed = (await client.get(TAX_RATES, headers=admin)).json()
    assert [(r["country"], r["region"], r["rate"]) for r in listed["data"]] == expected
    assert listed["pagination"]["total"] == 4
    second = (await client.get(TAX_RATES, params={"page": 2, "limit": 3}, headers=admin)).json()
    assert [r["region"] for r in second["data"]] == ["New York"]

    await tax_rates(client, admin, {"country": "GB", "rate": "0.2"})
    assert [(r["country"], r["rate"]) for r in (await client.get(TAX_RATES, headers=admin)).json()["data"]] == [
        ("GB", "0.2")
    ]
    await tax_rates(client, admin)
    assert (await client.get(TAX_RATES, headers=admin)).json()["data"] == []


async def test_tax_rate_validation_names_the_row_and_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    await tax_rates(client, admin, {"country": "GB", "rate": "0.2"})
    cases: list[tuple[list[dict[str, Any]], list[Any]]] = [
        ([{"country": "GB", "rate": "0.2"}, {"country": "XX", "rate": "0.1"}], ["body", "rates", 1, "country"]),
        ([{"country": "GB", "rate": "1"}], ["body", "rates", 0, "rate"]),
        ([{"country": "GB", "rate": "8.25"}], ["body", "rates", 0, "rate"]),  # a percentage, not a fraction
        ([{"country": "GB", "rate": "-0.01"}], ["body", "rates", 0, "rate"]),
        ([{"country": "GB", "rate": "0.1234567"}], ["body", "rates", 0, "rate"]),
        ([{"country": "GB"}], ["body", "rates", 0, "rate"]),
        (
            [{"country": "US", "region": "ca", "rate": "0.08"}, {"country": "US", "region": "CA", "rate": "0.09"}],
            ["body", "rates", 1, "region"],
        ),
        ([{"country": "US", "rate": "0.05"}, {"country": "us", "rate": "0.06"}], ["body", "rates", 1, "region"]),
    ]
    for rows, loc in cases:
        response = await client.put(TAX_RATES, json={"rates": rows}, headers=admin)
        assert response.status_code == 422, rows
        assert loc in error_locs(response), response.text
    assert (await client.put(TAX_RATES, json=[{"country": "GB", "rate": "0.2"}], headers=admin)).status_code == 422

    assert await count(services, TaxRate) == 1
    assert (await client.get(TAX_RATES, headers=admin)).json()["data"][0]["rate"] == "0.2"


# --- cart totals for a destination -----------------------------------------------------------------------------


async def test_cart_totals_for_a_destination(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await method(client, admin, **STANDARD)
    await method(client, admin, **EXPRESS)
    await tax_rates(
        client,
        admin,
        {"country": "US", "rate": "0.05"},
        {"country": "US", "region": "CA", "rate": "0.0825"},
    )
    thing = await product(client, admin, price="19.99", weight_grams=500)
    buyer = await customer(client)
    assert (await client.post(f"{CART}/items", json=item(thing, 2), headers=buyer)).status_code == 201

    plain = (await client.get(CART, headers=buyer)).json()
    to_us = (await client.get(CART, params={"country": "us"}, headers=buyer)).json()
    to_ca = (await client.get(CART, params={"country": "US", "region": "ca"}, headers=buyer)).json()
    to_jp = (await client.get(CART, params={"country": "JP"}, headers=buyer)).json()

    assert (plain["subtotal"], plain["shipping_total"], plain["tax_total"], plain["total"]) == (
        "39.98", "0.00", "0.00", "39.98",
    )  # fmt: skip
    # Standard: 4.99 + 1.00 × 1 kg; tax 5 % of 45.97 = 2.2985 → 2.30
    assert (to_us["shipping_total"], to_us["tax_total"], to_us["total"]) == ("5.99", "2.30", "48.27")
    # California: 8.25 % of 45.97 = 3.7925 → 3.79
    assert (to_ca["shipping_total"], to_ca["tax_total"], to_ca["total"]) == ("5.99", "3.79", "49.76")
    assert (to_jp["shipping_total"], to_jp["tax_total"], to_jp["total"]) == ("5.99", "0.00", "45.97")


async def test_cart_for_a_country_nobody_ships_to_is_422(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await method(client, admin, **EXPRESS)
    thing = await product(client, admin)
    buyer = await customer(client)
    assert (await client.post(f"{CART}/items", json=item(thing), headers=buyer)).status_code == 201

    nowhere = await client.get(CART, params={"country": "JP"}, headers=buyer)
    bad = await client.get(CART, params={"country": "Japan"}, headers=buyer)

    assert nowhere.status_code == 422 and error_locs(nowhere) == [["query", "country"]]
    assert bad.status_code == 422 and error_locs(bad) == [["query", "country"]]
    assert (await client.get(CART, headers=buyer)).json()["total"] == "10.00"


# --- the demo store --------------------------------------------------------------------------------------------


async def test_demo_store_seeds_three_methods_once(client: httpx.AsyncClient, services: Services) -> None:
    async with services.db.session(write=True) as session:
        assert await loader.load_shipping(session) == 3
    async with services.db.session(write=True) as session:
        assert await loader.load_shipping(session) == 0

    listed = (await client.get(METHODS)).json()["data"]
    assert [(m["name"], m["base_rate"], m["per_kg_rate"], m["free_over"], m["countries"]) for m in listed] == [
        ("Economy (free over 50.00)", "6.99", "0.50", "50.00", ["US", "CA"]),
        ("Express", "14.99", "2.50", None, ["US", "CA", "GB", "DE", "FR"]),
        ("Standard", "4.99", "1.00", "75.00", []),
    ]
