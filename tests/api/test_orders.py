"""Orders: placement from user and guest carts, snapshots, stock and coupon effects, access rules, notes,
cancellation, expiry, events and ``as_of``, staff channel orders and listings, and the races of API.md."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mercato.cart.models import CartItem
from mercato.catalog.models import Product
from mercato.inventory.models import InventoryItem
from mercato.orders.models import Order, OrderEvent
from mercato.platform import clock
from mercato.platform.context import Services
from mercato.promotions.models import Coupon
from tests.conftest import bearer, make_admin, register, run_jobs_after_reservation_ttl, sent_mail, user_with_role

ORDERS = "/api/v1/orders"
ADDRESS = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}


@pytest.fixture
async def admin(services: Services, client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await make_admin(services, client))


async def product(client: httpx.AsyncClient, admin: dict[str, str], *, price: str = "10.00", stock: int = 10) -> str:
    body = {"name": f"Thing {uuid.uuid4().hex[:6]}", "price": price, "status": "active", "stock": stock}
    response = await client.post("/api/v1/products", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def add(
    client: httpx.AsyncClient, product_id: str, quantity: int = 1, headers: dict[str, str] | None = None
) -> None:
    response = await client.post(
        "/api/v1/cart/items", json={"product_id": product_id, "quantity": quantity}, headers=headers or {}
    )
    assert response.status_code == 201, response.text


async def stock(services: Services, product_id: str) -> tuple[int, int]:
    """(on_hand, reserved) of a product without variants."""
    async with services.db.session(write=False) as session:
        row = (
            await session.execute(
                select(InventoryItem.on_hand, InventoryItem.reserved).where(
                    InventoryItem.product_id == uuid.UUID(product_id), InventoryItem.variant_id.is_(None)
                )
            )
        ).one()
        return int(row[0]), int(row[1])


async def count(services: Services, model: type, *where: Any) -> int:
    async with services.db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def guest(app: Any) -> httpx.AsyncClient:
    """A separate client with its own cookie jar (a guest's browser)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://testserver"
    )


async def test_customer_places_an_order_from_the_cart(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, price="19.99", stock=5)
    user = await register(client)
    headers = bearer(user)
    await add(client, pid, 2, headers)

    response = await client.post(ORDERS, json={"shipping_address": ADDRESS, "notes": "Ring twice"}, headers=headers)

    assert response.status_code == 201, response.text
    order = response.json()
    assert order["number"].startswith("MC-") and len(order["number"]) == 9
    assert order["status"] == "pending" and order["payment_status"] == "unpaid"
    assert order["user_id"] == user["user"]["id"] and order["order_token"] is None
    assert [(i["product_id"], i["quantity"], i["unit_price"], i["line_total"]) for i in order["items"]] == [
        (pid, 2, "19.99", "39.98")
    ]
    assert (order["subtotal"], order["discount_total"], order["total"], order["currency"]) == (
        "39.98",
        "0.00",
        "39.98",
        "USD",
    )
    assert order["shipping_address"]["postal_code"] == "SW1Y 4JH" and order["notes"] == "Ring twice"
    assert order["customer_email"] == user["user"]["email"]
    assert await stock(services, pid) == (5, 2)
    cart = (await client.get("/api/v1/cart", headers=headers)).json()
    assert cart["items"] == [] and cart["item_count"] == 0
    events = (await client.get(f"{ORDERS}/{order['id']}/events", headers=headers)).json()["data"]
    assert [(e["type"], e["status"]) for e in events] == [("order.placed", "pending")]
    mail = await sent_mail(services, user["user"]["email"])
    assert any(order["number"] in str(message["Subject"]) for message in mail)
    listed = (await client.get(ORDERS, headers=headers)).json()
    assert [o["id"] for o in listed["data"]] == [order["id"]] and listed["pagination"]["total"] == 1

    # a price change after placement does not touch the snapshot
    await client.patch(f"/api/v1/products/{pid}", json={"price": "25.00"}, headers=admin)
    again = (await client.get(f"{ORDERS}/{order['id']}", headers=headers)).json()
    assert again["items"][0]["unit_price"] == "19.99" and again["total"] == "39.98"


async def test_a_line_named_after_a_long_product_and_variant_fits_its_column(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """A 300-character product name and a 200-character variant name made a 503-character line name, which
    PostgreSQL refused (order_items.name is 300): the product name is cut, the variant name kept whole."""
    body = {
        "name": "P" * 300,
        "price": "5.00",
        "status": "active",
        "variants": [{"sku": "LONG-1", "name": "V" * 200, "stock": 3}],
    }
    created = await client.post("/api/v1/products", json=body, headers=admin)
    assert created.status_code == 201, created.text
    headers = bearer(await register(client))
    line = {"product_id": created.json()["id"], "variant_id": created.json()["variants"][0]["id"], "quantity": 1}
    assert (await client.post("/api/v1/cart/items", json=line, headers=headers)).status_code == 201
    response = await client.post(ORDERS, json={"shipping_address": ADDRESS}, headers=headers)
    assert response.status_code == 201, response.text
    [item] = response.json()["items"]
    assert item["name"] == "P" * 96 + "… – " + "V" * 200 and len(item["name"]) == 300
    assert await count(services, Order) == 1


async def test_sales_staff_read_orders_but_only_the_customer_or_an_admin_changes_them(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """API.md: PATCH and DELETE /orders/{id} are "C (own), A"; sales staff see every order."""
    pid = await product(client, admin, stock=5)
    customer = bearer(await register(client))
    await add(client, pid, 2, customer)
    placed = await client.post(ORDERS, json={"shipping_address": ADDRESS, "notes": "as placed"}, headers=customer)
    assert placed.status_code == 201, placed.text
    url = f"{ORDERS}/{placed.json()['id']}"
    sales = bearer(await user_with_role(services, client, "sales"))

    assert (await client.get(url, headers=sales)).status_code == 200
    for response in (
        await client.patch(url, json={"notes": "changed by sales"}, headers=sales),
        await client.delete(url, headers=sales),
        await client.patch(f"{url}/shipping", json={"shipping_address": {**ADDRESS, "city": "Leeds"}}, headers=sales),
    ):
        assert response.status_code == 403, response.text
    order = (await client.get(url, headers=customer)).json()
    assert (order["status"], order["notes"], order["shipping_address"]["city"]) == ("pending", "as placed", "London")
    assert await stock(services, pid) == (5, 2)
    assert (await client.delete(url, headers=admin)).json()["status"] == "cancelled"


async def test_a_variant_reserved_by_an_unpaid_order_cannot_be_deleted(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    created = await client.post(
        "/api/v1/products",
        json={
            "name": "Tee",
            "price": "10.00",
            "status": "active",
            "variants": [{"sku": "T-S", "name": "S", "stock": 3}],
        },
        headers=admin,
    )
    tee = created.json()
    variant_url = f"/api/v1/products/{tee['id']}/variants/{tee['variants'][0]['id']}"
    customer = bearer(await register(client))
    added = await client.post(
        "/api/v1/cart/items",
        json={"product_id": tee["id"], "variant_id": tee["variants"][0]["id"], "quantity": 2},
        headers=customer,
    )
    assert added.status_code == 201, added.text
    order = (await client.post(ORDERS, json={"shipping_address": ADDRESS}, headers=customer)).json()

    refused = await client.delete(variant_url, headers=admin)
    assert refused.status_code == 409 and refused.json()["type"].endswith("/conflict")
    assert len((await client.get(f"/api/v1/products/{tee['id']}")).json()["variants"]) == 1
    assert (await client.delete(f"{ORDERS}/{order['id']}", headers=customer)).json()["status"] == "cancelled"
    assert (await client.delete(variant_url, headers=admin)).status_code == 204


async def test_a_variant_in_an_order_not_yet_delivered_or_cancelled_cannot_be_deleted(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """Paid orders hold no reservation, but until they are delivered (or cancelled) they still move the variant's
    stock (a cancellation puts the units back on hand): deleting it is refused with 409 in pending, processing
    and shipped, and allowed once every order with it is delivered, cancelled or returned."""
    created = await client.post(
        "/api/v1/products",
        json={
            "name": "Tee",
            "price": "10.00",
            "status": "active",
            "variants": [{"sku": "T-S", "name": "S", "stock": 5}, {"sku": "T-M", "name": "M", "stock": 5}],
        },
        headers=admin,
    )
    tee = created.json()
    small, medium = (v["id"] for v in tee["variants"])
    customer = bearer(await register(client))

    async def paid_order(variant_id: str) -> dict[str, Any]:
        line = {"product_id": tee["id"], "variant_id": variant_id, "quantity": 2}
        assert (await client.post("/api/v1/cart/items", json=line, headers=customer)).status_code == 201
        order: dict[str, Any] = (await client.post(ORDERS, json={"shipping_address": ADDRESS}, headers=customer)).json()
        paid = await client.post(
            "/api/v1/payments", json={"order_id": order["id"], "payment_token": "tok_visa"}, headers=customer
        )
        assert paid.status_code == 201, paid.text
        return order

    async def delete(variant_id: str) -> httpx.Response:
        return await client.delete(f"/api/v1/products/{tee['id']}/variants/{variant_id}", headers=admin)

    async def variants() -> list[str]:
        return [v["id"] for v in (await client.get(f"/api/v1/products/{tee['id']}")).json()["variants"]]

    shipped = await paid_order(small)
    cancelled = await paid_order(medium)
    assert await stock_of(services, small) == (3, 0)  # sold: nothing reserved any more

    processing = await delete(small)
    assert processing.status_code == 409 and processing.headers["content-type"] == "application/problem+json"
    assert processing.json()["type"].endswith("/conflict")
    assert processing.json()["title"] == "Variant is in unfinished orders"
    assert shipped["number"] in processing.json()["detail"]
    assert (await client.post(f"{ORDERS}/{shipped['id']}/ship", json={}, headers=admin)).status_code == 200
    assert (await delete(small)).status_code == 409
    assert (await delete(medium)).status_code == 409
    assert await variants() == [small, medium]

    assert (await client.delete(f"{ORDERS}/{cancelled['id']}", headers=customer)).status_code == 200
    assert await stock_of(services, medium) == (5, 0)  # the cancellation put its units back: the row was there
    assert (await delete(medium)).status_code == 204
    delivered = await client.put(f"{ORDERS}/{shipped['id']}/status", json={"status": "delivered"}, headers=admin)
    assert delivered.status_code == 200, delivered.text
    assert (await delete(small)).status_code == 204
    assert await variants() == []
    # a refund with restock of the delivered order: the money goes back; the deleted variant's units cannot
    refund = await client.post(
        f"{ORDERS}/{shipped['id']}/refund", json={"reason": "returned", "restock": True}, headers=admin
    )
    assert refund.status_code == 201, refund.text
    assert (await client.get(f"{ORDERS}/{shipped['id']}", headers=customer)).json()["payment_status"] == "refunded"


async def stock_of(services: Services, variant_id: str) -> tuple[int, int]:
    """(on_hand, reserved) of a variant."""
    async with services.db.session(write=False) as session:
        row = (
            await session.execute(
                select(InventoryItem.on_hand, InventoryItem.reserved).where(
                    InventoryItem.variant_id == uuid.UUID(variant_id)
                )
            )
        ).one()
    return int(row[0]), int(row[1])


async def test_saved_address_and_address_rules(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    pid = await product(client, admin)
    user = await register(client)
    headers = bearer(user)
    saved = await client.post(f"/api/v1/users/{user['user']['id']}/addresses", json=ADDRESS, headers=headers)
    assert saved.status_code == 201, saved.text
    await add(client, pid, 1, headers)
    other = await register(client)
    foreign = await client.post(
        f"/api/v1/users/{other['user']['id']}/addresses", json=ADDRESS | {"city": "Paris"}, headers=bearer(other)
    )

    both = await client.post(
        ORDERS, json={"shipping_address": ADDRESS, "shipping_address_id": saved.json()["id"]}, headers=headers
    )
    neither = await client.post(ORDERS, json={}, headers=headers)
    bad_postcode = await client.post(
        ORDERS, json={"shipping_address": ADDRESS | {"postal_code": "123"}}, headers=headers
    )
    not_mine = await client.post(ORDERS, json={"shipping_address_id": foreign.json()["id"]}, headers=headers)
    ok = await client.post(ORDERS, json={"shipping_address_id": saved.json()["id"]}, headers=headers)

    assert both.status_code == neither.status_code == bad_postcode.status_code == 422
    assert bad_postcode.json()["errors"][0]["loc"] == ["body", "shipping_address", "postal_code"]
    assert not_mine.status_code == 404
    assert ok.status_code == 201, ok.text
    assert ok.json()["shipping_address"]["city"] == "London"


async def test_empty_cart_and_guest_without_email_are_422_and_change_nothing(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, stock=3)
    user = await register(client)
    empty = await client.post(ORDERS, json={"shipping_address": ADDRESS}, headers=bearer(user))
    assert empty.status_code == 422 and empty.json()["errors"][0]["loc"] == ["body", "cart"]

    async with guest(app) as browser:
        await add(browser, pid, 2)
        no_email = await browser.post(ORDERS, json={"shipping_address": ADDRESS})
        assert no_email.status_code == 422
        assert no_email.json()["errors"][0]["loc"] == ["body", "email"]
        assert (await browser.get("/api/v1/cart")).json()["item_count"] == 2
    assert await stock(services, pid) == (3, 0)
    assert await count(services, Order) == 0

    # a signed-in customer's order goes to the account's email: another address would get the messages and
    # spend that person's per-customer coupon uses
    await add(client, pid, 1, headers=bearer(user))
    elsewhere = await client.post(
        ORDERS, json={"shipping_address": ADDRESS, "email": "victim@example.com"}, headers=bearer(user)
    )
    assert elsewhere.status_code == 422 and elsewhere.json()["errors"][0]["loc"] == ["body", "email"]
    assert await stock(services, pid) == (3, 0) and await count(services, Order) == 0
    same = await client.post(
        ORDERS, json={"shipping_address": ADDRESS, "email": user["user"]["email"].upper()}, headers=bearer(user)
    )
    assert same.status_code == 201 and same.json()["customer_email"] == user["user"]["email"]


async def test_guest_checkout_with_order_token(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, price="5.00", stock=4)
    async with guest(app) as browser:
        await add(browser, pid, 3)
        placed = await browser.post(ORDERS, json={"shipping_address": ADDRESS, "email": "guest@example.com"})
        assert placed.status_code == 201, placed.text
        order = placed.json()
        token = order["order_token"]
        assert token and order["user_id"] is None and order["customer_email"] == "guest@example.com"

        assert (await browser.get(f"{ORDERS}/{order['id']}")).status_code == 404
        assert (await browser.get(f"{ORDERS}/{order['id']}", headers={"X-Order-Token": "wrong"})).status_code == 404
        assert (await browser.delete(f"{ORDERS}/{order['id']}", headers={"X-Order-Token": "wrong"})).status_code == 404
        mine = await browser.get(f"{ORDERS}/{order['id']}", headers={"X-Order-Token": token})
        assert mine.status_code == 200 and mine.json()["number"] == order["number"]
        assert "order_token" not in mine.json()
        assert await stock(services, pid) == (4, 3)

        cancelled = await browser.delete(f"{ORDERS}/{order['id']}", headers={"X-Order-Token": token})
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cancel_reason"] == "customer"
    assert await stock(services, pid) == (4, 0)
    subjects = [str(m["Subject"]) for m in await sent_mail(services, "guest@example.com")]
    assert subjects == [f"Your order {order['number']}", f"Your order {order['number']} has been cancelled"]


async def test_another_customer_never_sees_or_cancels_an_order(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin)
    owner = await register(client)
    await add(client, pid, 1, bearer(owner))
    order = (await client.post(ORDERS, json={"shipping_address": ADDRESS}, headers=bearer(owner))).json()
    intruder = bearer(await register(client))

    assert (await client.get(f"{ORDERS}/{order['id']}", headers=intruder)).status_code == 404
    assert (await client.get(f"{ORDERS}/{order['id']}/events", headers=intruder)).status_code == 404
    assert (await client.patch(f"{ORDERS}/{order['id']}", json={"notes": "x"}, headers=intruder)).status_code == 404
    assert (await client.delete(f"{ORDERS}/{order['id']}", headers=intruder)).status_code == 404
    assert (await client.get(ORDERS, headers=intruder)).json()["data"] == []
    assert (await client.get("/api/v1/admin/orders", headers=intruder)).status_code == 403
    assert (await client.get(f"{ORDERS}/{order['id']}", headers=admin)).status_code == 200
    assert await stock(services, pid) == (10, 1)


async def test_more_than_available_at_placement_is_409_and_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, stock=3)
    user = await register(client)
    headers = bearer(user)
    await add(client, pid, 3, headers)
    other = await register(client)
    await add(client, pid, 2, bearer(other))
    first = await client.post(ORDERS, json={"shipping_address": ADDRESS}, headers=bearer(other))
    assert first.status_code == 201

    refused = await client.post(ORDERS, json={"shipping_address": ADDRESS}, headers=headers)

    assert refused.status_code == 409 and refused.json()["type"].endswith("/insufficient-stock")
    assert await stock(services, pid) == (3, 2)
    assert (await client.get("/api/v1/cart", headers=headers)).json()["item_count"] == 3
    assert await count(services, Order) == 1


async def test_coupon_is_counted_at_placement_and_released_on_cancel(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, price="30.00")
    created = await client.post(
        "/api/v1/coupons", json={"code": "TENOFF", "type": "percentage", "value": "10", "usage_limit": 5}, headers=admin
    )
    assert created.status_code == 201, created.text
    user = await register(client)
    headers = bearer(user)
    await add(client, pid, 1, headers)
    applied = await client.post("/api/v1/cart/apply-coupon", json={"code": "tenoff"}, headers=headers)
    assert applied.status_code == 200, applied.text

    order = (await client.post(ORDERS, json={"shipping_address": ADDRESS}, headers=headers)).json()
    assert (order["coupon_code"], order["discount_total"], order["total"]) == ("TENOFF", "3.00", "27.00")
    async with services.db.session(write=False) as session:
        assert await session.scalar(select(Coupon.used_count).where(Coupon.code == "TENOFF")) == 1

    assert (await client.delete(f"{ORDERS}/{order['id']}", headers=headers)).status_code == 200
    async with services.db.session(write=False) as session:
        assert await session.scalar(select(Coupon.used_count).where(Coupon.code == "TENOFF")) == 0


async def test_notes_events_and_as_of(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    pid = await product(client, admin)
    user = await register(client)
    headers = bearer(user)
    await add(client, pid, 1, headers)
    order = (await client.post(ORDERS, json={"shipping_address": ADDRESS, "notes": "first"}, headers=headers)).json()
    await asyncio.sleep(0.01)
    updated = await client.patch(f"{ORDERS}/{order['id']}", json={"notes": "second"}, headers=headers)
    assert updated.status_code == 200 and updated.json()["notes"] == "second"
    await asyncio.sleep(0.01)
    cancelled = await client.delete(f"{ORDERS}/{order['id']}", headers=headers)
    assert cancelled.status_code == 200

    too_late = await client.patch(f"{ORDERS}/{order['id']}", json={"notes": "third"}, headers=headers)
    assert too_late.status_code == 409 and too_late.json()["type"].endswith("/invalid-transition")
    again = await client.delete(f"{ORDERS}/{order['id']}", headers=headers)
    assert again.status_code == 409

    events = (await client.get(f"{ORDERS}/{order['id']}/events", headers=headers)).json()["data"]
    assert [(e["type"], e["status"]) for e in events] == [
        ("order.placed", "pending"),
        ("order.updated", "pending"),
        ("order.cancelled", "cancelled"),
    ]
    assert events[1]["data"] == {"notes": "second"} and events[2]["actor_id"] == user["user"]["id"]
    assert "." in events[0]["created_at"]  # microseconds

    at_update = events[1]["created_at"]
    then = await client.get(f"{ORDERS}/{order['id']}", params={"as_of": at_update}, headers=headers)
    assert then.status_code == 200, then.text
    assert (then.json()["status"], then.json()["notes"]) == ("pending", "second")
    at_place = await client.get(f"{ORDERS}/{order['id']}", params={"as_of": events[0]["created_at"]}, headers=headers)
    assert (at_place.json()["status"], at_place.json()["notes"]) == ("pending", "first")
    before = (datetime.fromisoformat(events[0]["created_at"]) - timedelta(seconds=1)).isoformat()
    assert (await client.get(f"{ORDERS}/{order['id']}", params={"as_of": before}, headers=headers)).status_code == 404
    naive = await client.get(f"{ORDERS}/{order['id']}", params={"as_of": "2026-01-01T00:00:00"}, headers=headers)
    assert naive.status_code == 422 and naive.json()["errors"][0]["loc"] == ["query", "as_of"]
    for path, params, who in (
        (ORDERS, {"from": "2026-01-01T00:00:00"}, headers),
        (ORDERS, {"to": "2026-01-01"}, headers),
        ("/api/v1/admin/orders", {"from": "2026-01-01T00:00:00"}, admin),
        ("/api/v1/admin/audit-logs", {"from": "2026-01-01T00:00:00"}, admin),
    ):
        unzoned = await client.get(path, params=params, headers=who)
        assert unzoned.status_code == 422, (path, params, unzoned.text)
        assert unzoned.json()["errors"][0]["loc"] == ["query", next(iter(params))]
    zoned = await client.get(ORDERS, params={"from": "2026-01-01T00:00:00Z"}, headers=headers)
    assert zoned.status_code == 200 and zoned.json()["pagination"]["total"] == 1


async def test_instants_outside_the_utc_range_are_422_naming_the_parameter(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """A valid RFC 3339 time whose UTC instant falls outside years 1–9999 is refused (422 naming it), not a 500."""
    customer = bearer(await register(client))
    for path, params, who in (
        (ORDERS, {"from": "0001-01-01T00:00:00+01:00"}, customer),
        (ORDERS, {"to": "9999-12-31T23:59:59-05:00"}, customer),
        ("/api/v1/admin/orders", {"from": "0001-01-01T00:00:00+01:00"}, admin),
        ("/api/v1/admin/audit-logs", {"to": "0001-01-01T00:00:00+01:00"}, admin),
        ("/api/v1/admin/audit-logs", {"from": "9999-12-31T23:59:59-05:00"}, admin),
        (f"{ORDERS}/{uuid.uuid4()}", {"as_of": "9999-12-31T23:59:59-05:00"}, customer),
    ):
        response = await client.get(path, params=params, headers=who)
        assert response.status_code == 422, (path, params, response.text)
        assert response.json()["type"] == "https://mercato.dev/problems/validation-error"
        assert response.json()["errors"][0]["loc"] == ["query", next(iter(params))]
    edge = await client.get(ORDERS, params={"from": "0001-01-01T00:00:00-01:00"}, headers=customer)
    assert edge.status_code == 200 and edge.json()["data"] == []


async def test_unpaid_order_expires_and_releases_stock(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, stock=2)
    user = await register(client)
    await add(client, pid, 2, bearer(user))
    order = (await client.post(ORDERS, json={"shipping_address": ADDRESS}, headers=bearer(user))).json()
    assert await stock(services, pid) == (2, 2)

    await services.jobs.run_due()  # not due yet: nothing happens
    assert (await client.get(f"{ORDERS}/{order['id']}", headers=bearer(user))).json()["status"] == "pending"

    await run_jobs_after_reservation_ttl(services)

    expired = (await client.get(f"{ORDERS}/{order['id']}", headers=bearer(user))).json()
    assert (expired["status"], expired["cancel_reason"]) == ("cancelled", "expired")
    assert await stock(services, pid) == (2, 0)
    assert await count(services, OrderEvent, OrderEvent.type == "order.cancelled", OrderEvent.actor_id.is_(None)) == 1
    told = [m for m in await sent_mail(services, user["user"]["email"]) if "cancelled" in str(m["Subject"])]
    assert len(told) == 1 and "did not receive the payment in time" in told[0].get_content()


async def test_staff_order_on_the_web_channel_does_not_expire(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """POST /admin/orders: "the reservation does not expire" for orders staff enter, whatever their channel."""
    pid = await product(client, admin, stock=3)
    body = {
        "customer": {"name": "Grace Hopper"},
        "items": [{"product_id": pid, "quantity": 2}],
        "channel": "web",
        "shipping_address": ADDRESS,
    }
    created = await client.post("/api/v1/admin/orders", json=body, headers=admin)
    assert created.status_code == 201, created.text
    order = created.json()
    assert (order["channel"], order["reservation_expires_at"]) == ("web", None)

    await run_jobs_after_reservation_ttl(services)

    after = (await client.get(f"{ORDERS}/{order['id']}", headers=admin)).json()
    assert (after["status"], after["cancel_reason"]) == ("pending", None)
    assert await stock(services, pid) == (3, 2)
    assert await count(services, OrderEvent, OrderEvent.type == "order.cancelled") == 0


async def test_popularity_counts_units_sold_in_the_last_30_days(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """API.md "Catalog": sort=popularity is units sold in the last 30 days — a sale counts from its confirmation,
    a cancelled sale stops counting, and a sale leaves the count 30 days later."""
    never = await product(client, admin, stock=5)
    seller = await product(client, admin, stock=9)
    other = await product(client, admin, stock=9)

    async def sell(pid: str, quantity: int) -> str:
        customer = bearer(await register(client))
        await add(client, pid, quantity, customer)
        order = (await client.post(ORDERS, json={"shipping_address": ADDRESS}, headers=customer)).json()
        confirmed = await client.post(f"{ORDERS}/{order['id']}/confirm", json={}, headers=admin)
        assert confirmed.status_code == 200, confirmed.text
        return str(order["id"])

    async def ranking() -> list[str]:
        listed = await client.get("/api/v1/products", params={"sort": "-popularity", "limit": 3})
        return [p["id"] for p in listed.json()["data"]]

    async def units_sold() -> dict[str, int]:
        async with services.db.session(write=False) as session:
            rows = (await session.execute(select(Product.id, Product.units_sold_30d))).all()
        return {str(product_id): sold for product_id, sold in rows}

    await sell(seller, 3)
    cancelled = await sell(other, 4)
    assert (await ranking())[:2] == [other, seller]
    assert await units_sold() == {never: 0, seller: 3, other: 4}
    assert (await client.delete(f"{ORDERS}/{cancelled}", headers=admin)).status_code == 200
    assert (await ranking())[0] == seller
    assert await units_sold() == {never: 0, seller: 3, other: 0}

    later = datetime.now(UTC) + timedelta(days=31)
    clock.set_clock(lambda: later)
    try:
        await services.jobs.run_due()
    finally:
        clock.set_clock(None)
    assert await units_sold() == {never: 0, seller: 0, other: 0}


async def test_staff_channel_orders_and_listings(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, price="12.50", stock=10)
    customer = await register(client)
    body = {
        "customer": {"name": "Grace Hopper", "phone": "+1 555 0100"},
        "items": [{"product_id": pid, "quantity": 1}, {"product_id": pid, "quantity": 2}],
        "channel": "whatsapp",
        "shipping_address": ADDRESS,
        "expected_delivery_date": "2026-12-20",
        "priority": "high",
    }
    refused = await client.post("/api/v1/admin/orders", json=body, headers=bearer(customer))
    assert refused.status_code == 403

    created = await client.post("/api/v1/admin/orders", json=body, headers=admin)
    assert created.status_code == 201, created.text
    order = created.json()
    assert (order["channel"], order["priority"], order["customer_name"]) == ("whatsapp", "high", "Grace Hopper")
    assert order["items"][0]["quantity"] == 3 and order["total"] == "37.50"
    assert order["reservation_expires_at"] is None and order["user_id"] is None
    soon = await client.post(
        "/api/v1/admin/orders",
        json=body | {"expected_delivery_date": "2026-12-10", "user_id": customer["user"]["id"], "channel": "call"},
        headers=admin,
    )
    assert soon.status_code == 201 and soon.json()["customer_email"] == customer["user"]["email"]
    assert await stock(services, pid) == (10, 6)

    unknown_user = await client.post("/api/v1/admin/orders", json=body | {"user_id": str(uuid.uuid4())}, headers=admin)
    bad_channel = await client.post("/api/v1/admin/orders", json=body | {"channel": "pigeon"}, headers=admin)
    assert unknown_user.status_code == 404 and bad_channel.status_code == 422

    by_channel = (await client.get("/api/v1/admin/orders", params={"channel": "whatsapp"}, headers=admin)).json()
    assert [o["id"] for o in by_channel["data"]] == [order["id"]]
    by_q = (await client.get("/api/v1/admin/orders", params={"q": "grace"}, headers=admin)).json()
    assert by_q["pagination"]["total"] == 2
    priority = (await client.get("/api/v1/admin/orders/priority", headers=admin)).json()["data"]
    assert [o["id"] for o in priority] == [soon.json()["id"], order["id"]]
    mine = (await client.get(ORDERS, headers=bearer(customer))).json()["data"]
    assert [o["id"] for o in mine] == [soon.json()["id"]]


async def test_fifty_buyers_for_the_last_ten_units(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, stock=10)
    browsers = [guest(app) for _ in range(50)]
    try:
        for browser in browsers:
            await add(browser, pid, 1)
        responses = await asyncio.gather(
            *(
                browser.post(ORDERS, json={"shipping_address": ADDRESS, "email": f"buyer{n}@example.com"})
                for n, browser in enumerate(browsers)
            )
        )
    finally:
        for browser in browsers:
            await browser.aclose()

    codes = sorted(response.status_code for response in responses)
    assert codes == [201] * 10 + [409] * 40, [r.text for r in responses if r.status_code not in (201, 409)]
    assert await stock(services, pid) == (10, 10)
    assert await count(services, Order) == 10
    assert await count(services, CartItem) == 40  # the refused buyers keep their carts


async def test_twenty_orders_for_a_coupon_limited_to_five(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, stock=100)
    created = await client.post(
        "/api/v1/coupons", json={"code": "FIVE", "type": "fixed", "value": "1.00", "usage_limit": 5}, headers=admin
    )
    assert created.status_code == 201, created.text
    browsers = [guest(app) for _ in range(20)]
    try:
        for browser in browsers:
            await add(browser, pid, 1)
            assert (await browser.post("/api/v1/cart/apply-coupon", json={"code": "FIVE"})).status_code == 200
        responses = await asyncio.gather(
            *(
                browser.post(ORDERS, json={"shipping_address": ADDRESS, "email": f"c{n}@example.com"})
                for n, browser in enumerate(browsers)
            )
        )
    finally:
        for browser in browsers:
            await browser.aclose()

    codes = sorted(response.status_code for response in responses)
    assert codes == [201] * 5 + [422] * 15
    refused = [r.json() for r in responses if r.status_code == 422]
    assert all(body["type"].endswith("/coupon-invalid") for body in refused)
    async with services.db.session(write=False) as session:
        assert await session.scalar(select(Coupon.used_count).where(Coupon.code == "FIVE")) == 5
    assert await stock(services, pid) == (100, 5)
    assert await count(services, CartItem) == 15  # the refused buyers keep their carts


async def test_cancelling_while_placing_with_the_same_coupon_and_product_never_deadlocks(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    """Placing locks the coupon, then the stock; cancelling locked the stock, then the coupon, so the two at once
    could deadlock on PostgreSQL (a 500). Both now take the coupon first: ten rounds of a cancellation and a
    placement sent together all succeed, and the coupon count and the stock add up."""
    pid = await product(client, admin, stock=100)
    created = await client.post(
        "/api/v1/coupons", json={"code": "BOTH", "type": "percentage", "value": "10"}, headers=admin
    )
    assert created.status_code == 201, created.text
    customer = bearer(await register(client))
    rounds = 10
    browsers = [guest(app) for _ in range(rounds)]
    try:
        for browser in browsers:
            await add(client, pid, 1, customer)
            assert (await client.post("/api/v1/cart/apply-coupon", json={"code": "BOTH"}, headers=customer)).is_success
            placed = await client.post(ORDERS, json={"shipping_address": ADDRESS}, headers=customer)
            assert placed.status_code == 201, placed.text
            await add(browser, pid, 1)
            assert (await browser.post("/api/v1/cart/apply-coupon", json={"code": "BOTH"})).status_code == 200
            cancel, place = await asyncio.gather(
                client.delete(f"{ORDERS}/{placed.json()['id']}", headers=customer),
                browser.post(ORDERS, json={"shipping_address": ADDRESS, "email": "guest@example.com"}),
            )
            assert cancel.status_code == 200, cancel.text
            assert place.status_code == 201, place.text
    finally:
        for browser in browsers:
            await browser.aclose()
    async with services.db.session(write=False) as session:
        assert await session.scalar(select(Coupon.used_count).where(Coupon.code == "BOTH")) == rounds
    assert await stock(services, pid) == (100, rounds)


async def test_same_idempotency_key_ten_times_at_once_places_one_order(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, stock=10)
    user = await register(client)
    headers = bearer(user) | {"Idempotency-Key": "checkout-1"}
    await add(client, pid, 2, bearer(user))

    responses = await asyncio.gather(
        *(client.post(ORDERS, json={"shipping_address": ADDRESS}, headers=headers) for _ in range(10))
    )

    assert await count(services, Order) == 1
    created = [r for r in responses if r.status_code == 201]
    assert created and all(r.status_code in (201, 409) for r in responses)
    assert len({r.json()["id"] for r in created}) == 1
    replay = await client.post(ORDERS, json={"shipping_address": ADDRESS}, headers=headers)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == created[0].json()["id"]
    mismatch = await client.post(ORDERS, json={"shipping_address": ADDRESS, "notes": "x"}, headers=headers)
    assert mismatch.status_code == 422 and mismatch.json()["type"].endswith("/idempotency-mismatch")
    assert await stock(services, pid) == (10, 2)
