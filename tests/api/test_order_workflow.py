"""The admin order workflow (API.md "Orders"): ``PUT /orders/{id}/status`` and the confirm/ship/cancel verbs,
delivered and returned, the transition table (409 ``invalid-transition`` with nothing changed), who may do what,
tracking, the shipping address, the events each change appends and the emails it queues."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from mercato.platform.context import Services
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
NEW_ADDRESS = ADDRESS | {"line1": "10 Downing Street", "postal_code": "sw1a 2aa"}


@pytest.fixture
async def admin(services: Services, client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await make_admin(services, client))


async def product(client: httpx.AsyncClient, admin: dict[str, str], *, stock: int = 5) -> str:
    body = {"name": f"Thing {uuid.uuid4().hex[:6]}", "price": "10.00", "status": "active", "stock": stock}
    response = await client.post("/api/v1/products", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def place(
    client: httpx.AsyncClient, pid: str, headers: dict[str, str], quantity: int = 2, **extra: Any
) -> dict[str, Any]:
    added = await client.post("/api/v1/cart/items", json={"product_id": pid, "quantity": quantity}, headers=headers)
    assert added.status_code == 201, added.text
    response = await client.post(ORDERS, json={"shipping_address": ADDRESS, **extra}, headers=headers)
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


async def levels(client: httpx.AsyncClient, admin: dict[str, str], pid: str) -> tuple[int, int]:
    """(on_hand, reserved) as the inventory endpoint shows them."""
    response = await client.get("/api/v1/inventory", params={"product_id": pid}, headers=admin)
    assert response.status_code == 200, response.text
    row = response.json()["data"][0]
    return row["on_hand"], row["reserved"]


async def events(client: httpx.AsyncClient, order_id: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await client.get(f"{ORDERS}/{order_id}/events", headers=headers)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def order_mail(services: Services, to: str) -> list[EmailMessage]:
    """The order emails sent to ``to``, oldest first (not the account's verification email)."""
    return [m for m in await sent_mail(services, to) if str(m["Subject"]).startswith("Your order")]


def fresh(app: Any) -> httpx.AsyncClient:
    """A client with an empty cookie jar: an anonymous visitor, or a guest's browser."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_admin_confirms_an_unpaid_order_commits_stock_and_stops_the_reservation_clock(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, stock=5)
    user = await register(client)
    customer = bearer(user)
    order = await place(client, pid, customer, 2)
    assert await levels(client, admin, pid) == (5, 2)
    assert order["reservation_expires_at"] is not None

    response = await client.post(f"{ORDERS}/{order['id']}/confirm", json={"note": "Cash on delivery"}, headers=admin)

    assert response.status_code == 200, response.text
    confirmed = response.json()
    assert (confirmed["status"], confirmed["payment_status"]) == ("processing", "unpaid")
    assert confirmed["reservation_expires_at"] is None
    assert await levels(client, admin, pid) == (3, 0)
    history = await events(client, order["id"], customer)
    assert [(e["type"], e["status"]) for e in history] == [
        ("order.placed", "pending"),
        ("order.confirmed", "processing"),
    ]
    assert history[1]["data"] == {"reservation_expires_at": None, "note": "Cash on delivery"}
    assert history[1]["actor_id"] is not None
    moves = await client.get("/api/v1/inventory/history", params={"reference": order["number"]}, headers=admin)
    newest = moves.json()["data"][0]
    assert (newest["reason"], newest["delta"], newest["reserved_delta"]) == ("order.confirmed", -2, -2)
    mail = await order_mail(services, user["user"]["email"])
    assert [str(m["Subject"]) for m in mail] == [
        f"Your order {order['number']}",
        f"Your order {order['number']} is confirmed",
    ]
    assert "Cash on delivery" in mail[1].get_content()

    # the reservation's expiry job runs after the TTL and leaves the confirmed order alone
    await run_jobs_after_reservation_ttl(services)
    after = (await client.get(f"{ORDERS}/{order['id']}", headers=customer)).json()
    assert (after["status"], after["payment_status"], after["cancel_reason"]) == ("processing", "unpaid", None)
    assert await levels(client, admin, pid) == (3, 0)
    assert len(await events(client, order["id"], customer)) == 2


async def test_ship_deliver_return_with_tracking_events_emails_and_as_of(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, stock=5)
    user = await register(client)
    customer = bearer(user)
    order = await place(client, pid, customer, 1)
    oid, number = order["id"], order["number"]

    confirmed = await client.put(f"{ORDERS}/{oid}/status", json={"status": "processing"}, headers=admin)
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "processing"
    assert await levels(client, admin, pid) == (4, 0)

    shipped = await client.post(
        f"{ORDERS}/{oid}/ship", json={"carrier": "DHL", "tracking_number": "JD0146", "note": "2 parcels"}, headers=admin
    )
    assert shipped.status_code == 200, shipped.text
    assert (shipped.json()["status"], shipped.json()["carrier"], shipped.json()["tracking_number"]) == (
        "shipped",
        "DHL",
        "JD0146",
    )

    tracking = await client.get(f"{ORDERS}/{oid}/tracking", headers=customer)
    assert tracking.status_code == 200, tracking.text
    body = tracking.json()
    assert (body["order_id"], body["status"], body["carrier"], body["tracking_number"]) == (
        oid,
        "shipped",
        "DHL",
        "JD0146",
    )
    assert body["estimated_delivery"] is None
    assert [(e["status"], e["note"]) for e in body["events"]] == [
        ("pending", None),
        ("processing", None),
        ("shipped", "2 parcels"),
    ]
    shipping = (await client.get(f"{ORDERS}/{oid}/shipping", headers=customer)).json()
    assert (shipping["carrier"], shipping["tracking_number"], shipping["address"]["city"]) == (
        "DHL",
        "JD0146",
        "London",
    )

    delivered = await client.put(f"{ORDERS}/{oid}/status", json={"status": "delivered"}, headers=admin)
    assert delivered.status_code == 200 and delivered.json()["status"] == "delivered"
    returned = await client.put(
        f"{ORDERS}/{oid}/status", json={"status": "returned", "note": "Wrong size"}, headers=admin
    )
    assert returned.status_code == 200 and returned.json()["status"] == "returned"
    assert returned.json()["payment_status"] == "unpaid"
    assert await levels(client, admin, pid) == (4, 0)  # a return moves no stock; a refund with restock does

    history = await events(client, oid, customer)
    assert [(e["type"], e["status"]) for e in history] == [
        ("order.placed", "pending"),
        ("order.confirmed", "processing"),
        ("order.shipped", "shipped"),
        ("order.delivered", "delivered"),
        ("order.returned", "returned"),
    ]
    assert history[2]["data"] == {"carrier": "DHL", "tracking_number": "JD0146", "note": "2 parcels"}
    assert history[3]["data"] == {} and history[4]["data"] == {"note": "Wrong size"}
    final = (await client.get(f"{ORDERS}/{oid}/tracking", headers=customer)).json()
    assert [e["status"] for e in final["events"]] == ["pending", "processing", "shipped", "delivered", "returned"]

    at_shipping = await client.get(f"{ORDERS}/{oid}", params={"as_of": history[2]["created_at"]}, headers=customer)
    assert at_shipping.status_code == 200, at_shipping.text
    then = at_shipping.json()
    assert (then["status"], then["carrier"], then["tracking_number"], then["reservation_expires_at"]) == (
        "shipped",
        "DHL",
        "JD0146",
        None,
    )

    mail = await order_mail(services, user["user"]["email"])
    assert [str(m["Subject"]) for m in mail] == [
        f"Your order {number}",
        f"Your order {number} is confirmed",
        f"Your order {number} has shipped",
        f"Your order {number} has been delivered",
        f"Your order {number} has been returned",
    ]
    assert "DHL" in mail[2].get_content() and "JD0146" in mail[2].get_content()


async def test_every_invalid_move_is_409_and_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, stock=5)
    user = await register(client)
    customer = bearer(user)
    order = await place(client, pid, customer, 2)
    oid = order["id"]

    async def state() -> tuple[Any, ...]:
        now = (await client.get(f"{ORDERS}/{oid}", headers=admin)).json()
        return now, len(await events(client, oid, admin)), await levels(client, admin, pid)

    async def refused(method: str, path: str, body: dict[str, Any] | None = None) -> None:
        before = await state()
        response = await client.request(method, f"{ORDERS}/{oid}{path}", json=body, headers=admin)
        assert response.status_code == 409, (path, body, response.text)
        assert response.json()["type"] == "https://mercato.dev/problems/invalid-transition"
        assert response.headers["content-type"] == "application/problem+json"
        assert await state() == before

    # pending
    await refused("POST", "/ship", {"carrier": "DHL"})
    await refused("PUT", "/status", {"status": "shipped"})
    await refused("PUT", "/status", {"status": "delivered"})
    await refused("PUT", "/status", {"status": "returned"})
    await refused("PUT", "/status", {"status": "pending"})
    assert (await client.post(f"{ORDERS}/{oid}/confirm", headers=admin)).status_code == 200
    # processing
    await refused("POST", "/confirm")
    await refused("PUT", "/status", {"status": "processing"})
    await refused("PUT", "/status", {"status": "delivered"})
    await refused("PUT", "/status", {"status": "returned"})
    await refused("PUT", "/status", {"status": "pending"})
    assert (await client.post(f"{ORDERS}/{oid}/ship", headers=admin)).status_code == 200
    # shipped
    await refused("POST", "/cancel", {"note": "too late"})
    await refused("PUT", "/status", {"status": "cancelled"})
    await refused("PUT", "/status", {"status": "returned"})
    await refused("POST", "/ship", {"tracking_number": "X1"})
    await refused("POST", "/confirm")
    assert (await client.delete(f"{ORDERS}/{oid}", headers=customer)).status_code == 409
    assert (await client.put(f"{ORDERS}/{oid}/status", json={"status": "delivered"}, headers=admin)).status_code == 200
    # delivered
    await refused("PUT", "/status", {"status": "shipped"})
    await refused("PUT", "/status", {"status": "cancelled"})
    assert (await client.put(f"{ORDERS}/{oid}/status", json={"status": "returned"}, headers=admin)).status_code == 200
    # returned is final
    for target in ("pending", "processing", "shipped", "delivered", "cancelled", "returned"):
        await refused("PUT", "/status", {"status": target})

    # bad bodies are 422 and change nothing either
    before = await state()
    for bad in (
        {"status": "lost"},
        {"status": "shipped", "carrier": ""},
        {"status": "shipped", "extra": 1},
        {"status": "delivered", "carrier": "DHL"},
    ):
        response = await client.put(f"{ORDERS}/{oid}/status", json=bad, headers=admin)
        assert response.status_code == 422, (bad, response.text)
    assert await state() == before


async def test_cancel_verb_releases_or_restocks_and_records_the_note(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, stock=10)
    user = await register(client)
    customer = bearer(user)
    pending = await place(client, pid, customer, 2)
    processing = await place(client, pid, customer, 3)
    assert (await client.post(f"{ORDERS}/{processing['id']}/confirm", headers=admin)).status_code == 200
    assert await levels(client, admin, pid) == (7, 2)

    first = await client.post(f"{ORDERS}/{pending['id']}/cancel", json={"note": "Customer called"}, headers=admin)
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["cancel_reason"]) == ("cancelled", "staff")
    assert await levels(client, admin, pid) == (7, 0)
    second = await client.put(f"{ORDERS}/{processing['id']}/status", json={"status": "cancelled"}, headers=admin)
    assert second.status_code == 200, second.text
    assert await levels(client, admin, pid) == (10, 0)

    history = await events(client, pending["id"], customer)
    assert [(e["type"], e["status"]) for e in history] == [
        ("order.placed", "pending"),
        ("order.cancelled", "cancelled"),
    ]
    assert history[1]["data"] == {"cancel_reason": "staff", "reservation_expires_at": None, "note": "Customer called"}
    tracking = (await client.get(f"{ORDERS}/{pending['id']}/tracking", headers=customer)).json()
    assert [(e["status"], e["note"]) for e in tracking["events"]] == [
        ("pending", None),
        ("cancelled", "Customer called"),
    ]
    assert [e["type"] for e in await events(client, processing["id"], customer)] == [
        "order.placed",
        "order.confirmed",
        "order.cancelled",
    ]
    again = await client.post(f"{ORDERS}/{pending['id']}/cancel", headers=admin)
    assert again.status_code == 409 and again.json()["type"].endswith("/invalid-transition")

    mail = [str(m["Subject"]) for m in await order_mail(services, user["user"]["email"])]
    assert mail.count(f"Your order {pending['number']} has been cancelled") == 1
    assert mail.count(f"Your order {processing['number']} has been cancelled") == 1


async def test_only_admins_move_orders(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin)
    customer = bearer(await register(client))
    order = await place(client, pid, customer, 1)
    oid = order["id"]
    sales = bearer(await user_with_role(services, client, "sales"))
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("PUT", "/status", {"status": "processing"}),
        ("POST", "/confirm", None),
        ("POST", "/ship", None),
        ("POST", "/cancel", None),
    ]

    for method, path, body in calls:
        async with fresh(app) as anonymous:
            refused = await anonymous.request(method, f"{ORDERS}/{oid}{path}", json=body)
        assert refused.status_code == 401 and refused.json()["type"].endswith("/unauthorized")
        for who in (customer, sales):
            forbidden = await client.request(method, f"{ORDERS}/{oid}{path}", json=body, headers=who)
            assert forbidden.status_code == 403 and forbidden.json()["type"].endswith("/forbidden"), path
        missing = await client.request(method, f"{ORDERS}/{uuid.uuid4()}{path}", json=body, headers=admin)
        assert missing.status_code == 404 and missing.json()["type"].endswith("/not-found")

    now = (await client.get(f"{ORDERS}/{oid}", headers=customer)).json()
    assert now["status"] == "pending" and now["updated_at"] == order["updated_at"]
    assert await levels(client, admin, pid) == (5, 1)
    assert len(await events(client, oid, customer)) == 1


async def test_who_may_read_tracking_and_shipping(client: httpx.AsyncClient, app: Any, admin: dict[str, str]) -> None:
    pid = await product(client, admin)
    owner = bearer(await register(client))
    order = await place(client, pid, owner, 1)
    intruder = bearer(await register(client))

    for path in ("/tracking", "/shipping"):
        assert (await client.get(f"{ORDERS}/{order['id']}{path}", headers=owner)).status_code == 200
        assert (await client.get(f"{ORDERS}/{order['id']}{path}", headers=admin)).status_code == 200
        other = await client.get(f"{ORDERS}/{order['id']}{path}", headers=intruder)
        assert other.status_code == 404 and other.json()["type"].endswith("/not-found")
        async with fresh(app) as anonymous:
            assert (await anonymous.get(f"{ORDERS}/{order['id']}{path}")).status_code == 404
    assert (
        await client.patch(f"{ORDERS}/{order['id']}/shipping", json={"shipping_address": NEW_ADDRESS}, headers=intruder)
    ).status_code == 404

    async with fresh(app) as browser:
        guest_order = await place(browser, pid, {}, 1, email="guest@example.com")
        token = {"X-Order-Token": guest_order["order_token"]}
        assert (await browser.get(f"{ORDERS}/{guest_order['id']}/tracking")).status_code == 404
        wrong = await browser.get(f"{ORDERS}/{guest_order['id']}/tracking", headers={"X-Order-Token": "wrong"})
        assert wrong.status_code == 404
        mine = await browser.get(f"{ORDERS}/{guest_order['id']}/tracking", headers=token)
        assert mine.status_code == 200, mine.text
        assert mine.json()["status"] == "pending" and [e["status"] for e in mine.json()["events"]] == ["pending"]
        moved = await browser.patch(
            f"{ORDERS}/{guest_order['id']}/shipping", json={"shipping_address": NEW_ADDRESS}, headers=token
        )
        assert moved.status_code == 200 and moved.json()["address"]["line1"] == "10 Downing Street"


async def test_sales_staff_may_not_read_tracking_or_shipping(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """API.md: GET /orders/{id}/tracking and /shipping are "C (own), A": sales staff get 403 (they still read the
    order itself and its events, "C (own), A, S"); a sales account's own order is its own."""
    pid = await product(client, admin)
    owner = bearer(await register(client))
    order = await place(client, pid, owner, 1)
    sales = bearer(await user_with_role(services, client, "sales"))

    for path in ("/tracking", "/shipping"):
        refused = await client.get(f"{ORDERS}/{order['id']}{path}", headers=sales)
        assert refused.status_code == 403 and refused.json()["type"].endswith("/forbidden"), path
        assert order["number"] not in refused.text and "Lovelace" not in refused.text  # none of the order's data
        missing = await client.get(f"{ORDERS}/{uuid.uuid4()}{path}", headers=sales)
        assert missing.status_code == 404, path
        assert (await client.get(f"{ORDERS}/{order['id']}{path}", headers=admin)).status_code == 200
    assert (await client.get(f"{ORDERS}/{order['id']}", headers=sales)).status_code == 200
    assert (await client.get(f"{ORDERS}/{order['id']}/events", headers=sales)).status_code == 200

    own = await place(client, pid, sales, 1)
    for path in ("/tracking", "/shipping"):
        assert (await client.get(f"{ORDERS}/{own['id']}{path}", headers=sales)).status_code == 200, path


async def test_shipping_address_changes_until_the_order_ships(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin)
    user = await register(client)
    customer = bearer(user)
    order = await place(client, pid, customer, 2)
    oid = order["id"]

    bad = await client.patch(
        f"{ORDERS}/{oid}/shipping", json={"shipping_address": ADDRESS | {"postal_code": "123"}}, headers=customer
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "shipping_address", "postal_code"]
    moved = await client.patch(f"{ORDERS}/{oid}/shipping", json={"shipping_address": NEW_ADDRESS}, headers=customer)
    assert moved.status_code == 200, moved.text
    shipping = moved.json()
    assert (shipping["address"]["line1"], shipping["address"]["postal_code"]) == ("10 Downing Street", "SW1A 2AA")
    assert shipping["method"] is None and shipping["carrier"] is None
    same = await client.patch(f"{ORDERS}/{oid}/shipping", json={"shipping_address": NEW_ADDRESS}, headers=customer)
    assert same.status_code == 200
    now = (await client.get(f"{ORDERS}/{oid}", headers=customer)).json()
    assert now["shipping_address"]["line1"] == "10 Downing Street"
    assert (now["subtotal"], now["shipping_total"], now["total"]) == (order["subtotal"], "0.00", order["total"])

    assert (await client.post(f"{ORDERS}/{oid}/confirm", headers=admin)).status_code == 200
    by_staff = await client.put(
        f"{ORDERS}/{oid}/shipping", json={"shipping_address": ADDRESS | {"line2": "Flat 2"}}, headers=admin
    )
    assert by_staff.status_code == 200 and by_staff.json()["address"]["line2"] == "Flat 2"
    assert (await client.post(f"{ORDERS}/{oid}/ship", json={"carrier": "UPS"}, headers=admin)).status_code == 200

    for who in (customer, admin):
        late = await client.patch(f"{ORDERS}/{oid}/shipping", json={"shipping_address": NEW_ADDRESS}, headers=who)
        assert late.status_code == 409 and late.json()["type"].endswith("/invalid-transition")
    after = (await client.get(f"{ORDERS}/{oid}/shipping", headers=customer)).json()
    assert (after["address"]["line2"], after["carrier"], after["tracking_number"]) == ("Flat 2", "UPS", None)

    history = await events(client, oid, customer)
    assert [(e["type"], e["status"]) for e in history] == [
        ("order.placed", "pending"),
        ("order.updated", "pending"),
        ("order.confirmed", "processing"),
        ("order.updated", "processing"),
        ("order.shipped", "shipped"),
    ]
    assert history[1]["data"]["shipping_address"]["line1"] == "10 Downing Street"
    assert history[1]["actor_id"] == user["user"]["id"]
    then = await client.get(f"{ORDERS}/{oid}", params={"as_of": history[1]["created_at"]}, headers=customer)
    assert then.json()["shipping_address"]["postal_code"] == "SW1A 2AA"
    tracking = (await client.get(f"{ORDERS}/{oid}/tracking", headers=customer)).json()
    assert [e["status"] for e in tracking["events"]] == ["pending", "processing", "shipped"]


async def test_orders_without_an_email_move_without_mail(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin)
    body = {
        "customer": {"name": "Grace Hopper", "phone": "+1 555 0100"},
        "items": [{"product_id": pid, "quantity": 1}],
        "channel": "call",
        "shipping_address": ADDRESS,
        "expected_delivery_date": "2026-12-20",
    }
    created = await client.post("/api/v1/admin/orders", json=body, headers=admin)
    assert created.status_code == 201, created.text
    oid = created.json()["id"]
    await sent_mail(services)
    before = len(await sent_mail(services))

    assert (await client.post(f"{ORDERS}/{oid}/confirm", headers=admin)).status_code == 200
    assert (await client.post(f"{ORDERS}/{oid}/ship", headers=admin)).status_code == 200
    tracking = (await client.get(f"{ORDERS}/{oid}/tracking", headers=admin)).json()
    assert tracking["estimated_delivery"] == "2026-12-20"
    assert await levels(client, admin, pid) == (4, 0)
    assert len(await sent_mail(services)) == before


async def test_changes_made_with_an_api_key_name_the_key_in_the_order_events(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """An API key belongs to no user, so its events have no ``actor_id``; ``api_key_id`` names the key (as the
    audit log does). Events of users and of the system (a job run right after the key's requests) name no key."""
    keys = {}
    for role in ("admin", "sales"):
        created = await client.post("/api/v1/admin/api-keys", headers=admin, json={"name": f"erp-{role}", "role": role})
        assert created.status_code == 201, created.text
        keys[role] = (created.json()["id"], {"X-API-Key": created.json()["key"]})
    admin_key_id, admin_key = keys["admin"]
    sales_key_id, sales_key = keys["sales"]
    pid = await product(client, admin, stock=5)
    user = await register(client)
    order = await place(client, pid, bearer(user), 1)
    unpaid = await place(client, pid, bearer(user), 1)
    body = {"customer": {"name": "Grace Hopper"}, "items": [{"product_id": pid, "quantity": 1}], "channel": "call"}
    taken = await client.post("/api/v1/admin/orders", json=body | {"shipping_address": ADDRESS}, headers=sales_key)
    assert taken.status_code == 201, taken.text

    noted = await client.patch(f"{ORDERS}/{order['id']}", json={"notes": "gift wrap"}, headers=admin_key)
    confirmed = await client.post(f"{ORDERS}/{order['id']}/confirm", json={}, headers=admin_key)
    shipped = await client.put(f"{ORDERS}/{order['id']}/status", json={"status": "shipped"}, headers=admin_key)
    cancelled = await client.delete(f"{ORDERS}/{taken.json()['id']}", headers=admin_key)

    assert [r.status_code for r in (noted, confirmed, shipped, cancelled)] == [200] * 4
    # then the unpaid order expires: the job runner (a task of its own, outside any request) acts for no key
    await asyncio.create_task(run_jobs_after_reservation_ttl(services), context=contextvars.Context())
    history = await events(client, order["id"], bearer(user))
    assert [(e["type"], e["actor_id"], e["api_key_id"]) for e in history] == [
        ("order.placed", user["user"]["id"], None),
        ("order.updated", None, admin_key_id),
        ("order.confirmed", None, admin_key_id),
        ("order.shipped", None, admin_key_id),
    ]
    channel = await events(client, taken.json()["id"], admin)
    assert [(e["type"], e["actor_id"], e["api_key_id"]) for e in channel] == [
        ("order.placed", None, sales_key_id),
        ("order.cancelled", None, admin_key_id),
    ]
    expired = await events(client, unpaid["id"], bearer(user))
    assert [(e["type"], e["actor_id"], e["api_key_id"]) for e in expired] == [
        ("order.placed", user["user"]["id"], None),
        ("order.cancelled", None, None),
    ]
