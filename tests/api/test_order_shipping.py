"""Shipping and tax in placed orders (API.md ``POST /orders``, "Cart" → Pricing): the chosen method's cost, the
cheapest method when none is chosen, ``free_over`` after the coupon, the destination's tax, the method snapshot
and expected delivery date, and the refusals (no method ships there, an unknown or unusable method)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mercato.cart.models import CartItem
from mercato.inventory.models import InventoryItem
from mercato.orders.models import Order
from mercato.platform.context import Services
from tests.api.test_shipping import EXPRESS, STANDARD, error_locs, item, method, on_friday, product, tax_rates
from tests.conftest import bearer, make_admin, register

ORDERS = "/api/v1/orders"
CART_ITEMS = "/api/v1/cart/items"
LONDON = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}
SAN_FRANCISCO = {
    "first_name": "Grace",
    "last_name": "Hopper",
    "line1": "1 Market Street",
    "city": "San Francisco",
    "region": "CA",
    "postal_code": "94105",
    "country": "US",
}
TOKYO = {
    "first_name": "Yukihiro",
    "last_name": "Matsumoto",
    "line1": "1-1 Chiyoda",
    "city": "Tokyo",
    "postal_code": "100-0001",
    "country": "JP",
}


@pytest.fixture
async def admin(services: Services, client: httpx.AsyncClient) -> dict[str, str]:
    headers = bearer(await make_admin(services, client))
    client.cookies.clear()
    return headers


async def customer_with_cart(client: httpx.AsyncClient, product_id: str, quantity: int) -> dict[str, str]:
    headers = bearer(await register(client))
    client.cookies.clear()  # bearer only
    response = await client.post(CART_ITEMS, json=item(product_id, quantity), headers=headers)
    assert response.status_code == 201, response.text
    return headers


async def place(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post(ORDERS, json=body, headers=headers)


def money(order: dict[str, Any]) -> tuple[str, str, str, str, str]:
    return (order["subtotal"], order["discount_total"], order["shipping_total"], order["tax_total"], order["total"])


async def count(services: Services, model: type, *where: Any) -> int:
    async with services.db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def reserved(services: Services, product_id: str) -> int:
    async with services.db.session(write=False) as session:
        query = select(InventoryItem.reserved).where(InventoryItem.product_id == uuid.UUID(product_id))
        return int((await session.execute(query)).scalar_one())


async def test_chosen_method_and_regional_tax_are_in_the_totals(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await method(client, admin, **STANDARD)
    express = await method(client, admin, **EXPRESS)
    await tax_rates(
        client, admin, {"country": "US", "rate": "0.05"}, {"country": "US", "region": "CA", "rate": "0.0825"}
    )
    thing = await product(client, admin, price="19.99", weight_grams=500)
    headers = await customer_with_cart(client, thing, 2)

    with on_friday():
        response = await place(client, headers, shipping_address=SAN_FRANCISCO, shipping_method_id=express["id"])

    assert response.status_code == 201, response.text
    order = response.json()
    # Express for 1 kg: 14.99 + 2.50; tax 8.25 % of (39.98 + 17.49) = 4.741275 → 4.74
    assert money(order) == ("39.98", "0.00", "17.49", "4.74", "62.21")
    snapshot = order["shipping_method"]
    assert (snapshot["id"], snapshot["name"], snapshot["carrier"]) == (express["id"], "Express", "DHL Express")
    assert (snapshot["rate"], snapshot["weight_kg"], snapshot["min_days"], snapshot["max_days"]) == ("17.49", "1", 1, 2)
    assert snapshot["estimated_delivery"] == {"min_date": "2026-11-30", "max_date": "2026-12-01"}  # Mon–Tue
    assert order["expected_delivery_date"] == "2026-12-01"

    # the method changing later does not touch the order
    await client.patch(f"/api/v1/shipping/methods/{express['id']}", json={"base_rate": "99.00"}, headers=admin)
    again = (await client.get(f"{ORDERS}/{order['id']}", headers=headers)).json()
    assert again["shipping_total"] == "17.49" and again["shipping_method"]["base_rate"] == "14.99"


async def test_cheapest_method_that_ships_there_when_none_is_chosen(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    standard = await method(client, admin, **STANDARD)
    await method(client, admin, **EXPRESS)
    await method(client, admin, **{**EXPRESS, "name": "Courier", "base_rate": "2.00", "countries": ["US"]})
    await tax_rates(client, admin, {"country": "GB", "rate": "0.2"}, {"country": "US", "rate": "0.05"})
    thing = await product(client, admin, price="10.00", weight_grams=2000)
    headers = await customer_with_cart(client, thing, 1)

    with on_friday():
        response = await place(client, headers, shipping_address=LONDON)

    assert response.status_code == 201, response.text
    order = response.json()
    # Standard: 4.99 + 1.00 × 2 kg (Courier is cheaper but does not ship to GB); tax 20 % of 16.99 = 3.398 → 3.40
    assert money(order) == ("10.00", "0.00", "6.99", "3.40", "20.39")
    assert order["shipping_method"]["id"] == standard["id"]
    assert order["expected_delivery_date"] == "2026-12-08"  # 7 business days from a Friday


async def test_free_over_compares_the_subtotal_after_the_coupon(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await method(client, admin, **STANDARD)
    await tax_rates(client, admin, {"country": "GB", "rate": "0.2"})
    coupon = {"code": "TENOFF", "type": "fixed", "value": "10"}
    assert (await client.post("/api/v1/coupons", json=coupon, headers=admin)).status_code == 201
    thing = await product(client, admin, price="80.00", weight_grams=1000)

    full = await place(client, await customer_with_cart(client, thing, 1), shipping_address=LONDON)
    discounted_buyer = await customer_with_cart(client, thing, 1)
    applied = await client.post("/api/v1/cart/apply-coupon", json={"code": "TENOFF"}, headers=discounted_buyer)
    assert applied.status_code == 200, applied.text
    discounted = await place(client, discounted_buyer, shipping_address=LONDON)

    assert full.status_code == 201 and discounted.status_code == 201, discounted.text
    # 80.00 reaches free_over 75.00: no shipping; tax 20 % of 80.00
    assert money(full.json()) == ("80.00", "0.00", "0.00", "16.00", "96.00")
    # 80.00 − 10.00 = 70.00 is below 75.00: 4.99 + 1.00 × 1 kg; tax 20 % of 75.99 = 15.198 → 15.20
    assert money(discounted.json()) == ("80.00", "10.00", "5.99", "15.20", "91.19")


async def test_a_country_no_method_ships_to_is_422_and_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    await method(client, admin, **EXPRESS)
    thing = await product(client, admin)
    headers = await customer_with_cart(client, thing, 2)

    response = await place(client, headers, shipping_address=TOKYO)

    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/validation-error")
    assert error_locs(response) == [["body", "shipping_address", "country"]]
    assert await count(services, Order) == 0
    assert await reserved(services, thing) == 0
    assert await count(services, CartItem) == 1


async def test_unknown_inactive_or_elsewhere_method_is_422(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    express = await method(client, admin, **EXPRESS)
    inactive = await method(client, admin, **{**STANDARD, "is_active": False})
    thing = await product(client, admin)
    headers = await customer_with_cart(client, thing, 1)

    for method_id, address in (
        (str(uuid.uuid4()), LONDON),
        (inactive["id"], LONDON),
        (express["id"], TOKYO),
    ):
        response = await place(client, headers, shipping_address=address, shipping_method_id=method_id)
        assert response.status_code == 422, response.text
        assert error_locs(response) == [["body", "shipping_method_id"]]
    assert await count(services, Order) == 0 and await reserved(services, thing) == 0

    placed = await place(client, headers, shipping_address=LONDON, shipping_method_id=express["id"])
    assert placed.status_code == 201 and placed.json()["shipping_total"] == "14.99"


async def test_a_store_without_methods_charges_no_shipping(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await tax_rates(client, admin, {"country": "GB", "rate": "0.2"})
    thing = await product(client, admin, price="12.34", weight_grams=5000)
    headers = await customer_with_cart(client, thing, 1)

    response = await place(client, headers, shipping_address=LONDON)

    assert response.status_code == 201, response.text
    order = response.json()
    assert money(order) == ("12.34", "0.00", "0.00", "2.47", "14.81")  # 20 % of 12.34 = 2.468 → 2.47
    assert order["shipping_method"] is None and order["expected_delivery_date"] is None
    unknown = await place(
        client,
        await customer_with_cart(client, thing, 1),
        shipping_address=LONDON,
        shipping_method_id=str(uuid.uuid4()),
    )
    assert unknown.status_code == 422 and error_locs(unknown) == [["body", "shipping_method_id"]]


async def test_staff_orders_get_shipping_and_keep_their_own_date(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await method(client, admin, **STANDARD)
    express = await method(client, admin, **EXPRESS)
    thing = await product(client, admin, price="12.50", weight_grams=400)
    body: dict[str, Any] = {
        "customer": {"name": "Grace Hopper", "phone": "+1 555 0100"},
        "items": [item(thing, 5)],
        "channel": "call",
        "shipping_address": LONDON,
    }

    with on_friday():
        estimated = await client.post("/api/v1/admin/orders", json=body, headers=admin)
        promised = await client.post(
            "/api/v1/admin/orders",
            json=body | {"shipping_method_id": express["id"], "expected_delivery_date": "2026-12-24"},
            headers=admin,
        )

    assert estimated.status_code == 201 and promised.status_code == 201, promised.text
    # 2 kg; Standard 4.99 + 2.00; Express 14.99 + 5.00
    assert money(estimated.json()) == ("62.50", "0.00", "6.99", "0.00", "69.49")
    assert estimated.json()["expected_delivery_date"] == "2026-12-08"
    assert money(promised.json()) == ("62.50", "0.00", "19.99", "0.00", "82.49")
    assert promised.json()["expected_delivery_date"] == "2026-12-24"
    assert promised.json()["shipping_method"]["name"] == "Express"


async def test_a_new_address_the_method_does_not_ship_to_is_422_and_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """PATCH /orders/{id}/shipping checks the new address as placement does: the order's method must ship there."""
    express = await method(client, admin, **EXPRESS)
    thing = await product(client, admin)
    headers = await customer_with_cart(client, thing, 1)
    placed = await place(client, headers, shipping_address=LONDON, shipping_method_id=express["id"])
    assert placed.status_code == 201, placed.text
    order = placed.json()

    patch = f"{ORDERS}/{order['id']}/shipping"
    refused = await client.patch(patch, json={"shipping_address": TOKYO}, headers=headers)

    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("/validation-error")
    assert error_locs(refused) == [["body", "shipping_address", "country"]]
    assert "Express does not ship to JP" in refused.json()["detail"]
    now = (await client.get(f"{ORDERS}/{order['id']}", headers=headers)).json()
    assert now["shipping_address"]["city"] == "London" and money(now) == money(order)
    history = (await client.get(f"{ORDERS}/{order['id']}/events", headers=headers)).json()["data"]
    assert [e["type"] for e in history] == ["order.placed"]

    elsewhere = SAN_FRANCISCO | {"region": None}  # Express ships to the US; no tax rates: the totals stay right
    moved = await client.patch(patch, json={"shipping_address": elsewhere}, headers=headers)
    assert moved.status_code == 200, moved.text
    assert moved.json()["address"]["country"] == "US" and moved.json()["method"]["id"] == express["id"]


async def test_a_new_address_that_would_change_the_tax_is_422_and_one_that_would_not_is_accepted(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """API.md: the method and the totals stay as placed, so a destination taxed differently is refused (422 on the
    field that changes the rate) rather than leaving a total taxed at the wrong rate; the same rate is accepted."""
    await method(client, admin, **STANDARD)
    await tax_rates(
        client,
        admin,
        {"country": "GB", "rate": "0.2"},
        {"country": "DE", "rate": "0.2"},
        {"country": "US", "rate": "0.05"},
        {"country": "US", "region": "CA", "rate": "0.0825"},
    )
    thing = await product(client, admin, price="20.00", weight_grams=1000)
    headers = await customer_with_cart(client, thing, 1)
    placed = await place(client, headers, shipping_address=SAN_FRANCISCO)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    # Standard 4.99 + 1.00; tax 8.25 % of 25.99 = 2.144175 → 2.14
    assert money(order) == ("20.00", "0.00", "5.99", "2.14", "28.13")
    patch = f"{ORDERS}/{order['id']}/shipping"

    to_london = await client.patch(patch, json={"shipping_address": LONDON}, headers=headers)
    new_york = SAN_FRANCISCO | {"city": "New York", "region": "NY", "postal_code": "10001"}
    to_new_york = await client.patch(patch, json={"shipping_address": new_york}, headers=headers)

    assert to_london.status_code == 422 and error_locs(to_london) == [["body", "shipping_address", "country"]]
    assert to_new_york.status_code == 422 and error_locs(to_new_york) == [["body", "shipping_address", "region"]]
    assert "2.14" in to_new_york.json()["detail"] and "1.30" in to_new_york.json()["detail"]  # 5 % of 25.99
    unchanged = (await client.get(f"{ORDERS}/{order['id']}", headers=headers)).json()
    assert unchanged["shipping_address"]["city"] == "San Francisco" and money(unchanged) == money(order)

    los_angeles = SAN_FRANCISCO | {"city": "Los Angeles", "region": "ca", "postal_code": "90001"}
    moved = await client.patch(patch, json={"shipping_address": los_angeles}, headers=headers)
    assert moved.status_code == 200, moved.text
    after = (await client.get(f"{ORDERS}/{order['id']}", headers=headers)).json()
    assert after["shipping_address"]["city"] == "Los Angeles" and money(after) == money(order)

    # same rate in another country: accepted, totals as placed
    london_buyer = await customer_with_cart(client, thing, 1)
    in_london = (await place(client, london_buyer, shipping_address=LONDON)).json()
    berlin = LONDON | {"city": "Berlin", "postal_code": "10117", "country": "DE"}
    to_berlin = await client.patch(
        f"{ORDERS}/{in_london['id']}/shipping", json={"shipping_address": berlin}, headers=london_buyer
    )
    assert to_berlin.status_code == 200, to_berlin.text
    berlin_order = (await client.get(f"{ORDERS}/{in_london['id']}", headers=london_buyer)).json()
    assert berlin_order["shipping_address"]["country"] == "DE" and money(berlin_order) == money(in_london)

    # the rate table changing later does not block a change within the same destination
    await tax_rates(client, admin, {"country": "US", "region": "CA", "rate": "0.09"})
    street = los_angeles | {"line1": "2 Main Street"}
    fixed = await client.patch(patch, json={"shipping_address": street}, headers=headers)
    assert fixed.status_code == 200, fixed.text
    assert money((await client.get(f"{ORDERS}/{order['id']}", headers=headers)).json()) == money(order)
