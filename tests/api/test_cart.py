"""The cart: guest carts keyed by the ``mercato_cart`` cookie, user carts, line rules and stock limits, totals at
current prices, coupons, the merge at sign-in, isolation between customers and expiry."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from mercato.cart import service as cart_service
from mercato.cart.models import Cart, CartItem
from mercato.platform import clock
from mercato.platform.context import Services
from mercato.platform.jobs import Job
from tests.api.test_oidc import Issuer, sign_in
from tests.api.test_oidc import issuer as issuer  # the local OpenID provider fixture
from tests.conftest import STRONG_PASSWORD, bearer, make_admin, register

CART = "/api/v1/cart"
ITEMS = "/api/v1/cart/items"
THIRTY_DAYS = 30 * 24 * 3600


@pytest.fixture
async def admin(services: Services, client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await make_admin(services, client))


def browser(app: Any) -> httpx.AsyncClient:
    """A separate client with its own cookie jar (a guest's browser)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://testserver"
    )


async def product(
    client: httpx.AsyncClient, admin: dict[str, str], *, price: str = "10.00", stock: int | None = 10, **fields: Any
) -> dict[str, Any]:
    body = {"name": f"Thing {uuid.uuid4().hex[:6]}", "price": price, "status": "active", **fields}
    if stock is not None:
        body["stock"] = stock
    response = await client.post("/api/v1/products", json=body, headers=admin)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def add(
    client: httpx.AsyncClient,
    product_id: str,
    quantity: Any = 1,
    *,
    variant_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"product_id": product_id, "quantity": quantity}
    if variant_id is not None:
        body["variant_id"] = variant_id
    return await client.post(ITEMS, json=body, headers=headers or {})


async def count(services: Services, model: type, *where: Any) -> int:
    async with services.db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def lines(services: Services) -> list[tuple[uuid.UUID, uuid.UUID | None, int]]:
    """Every cart line in the database as (cart_id, variant_id, quantity), in a stable order."""
    async with services.db.session(write=False) as session:
        rows = await session.execute(
            select(CartItem.cart_id, CartItem.variant_id, CartItem.quantity).order_by(CartItem.id)
        )
        return [(row[0], row[1], row[2]) for row in rows]


async def coupon(client: httpx.AsyncClient, admin: dict[str, str], code: str, **terms: Any) -> None:
    body = {"code": code, "type": "percentage", "value": "10", **terms}
    response = await client.post("/api/v1/coupons", json=body, headers=admin)
    assert response.status_code == 201, response.text


def cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


# --- guests and users -------------------------------------------------------------------------------------------


async def test_guest_cart_lives_in_a_cookie_and_no_one_else_sees_it(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    thing = await product(client, admin, price="12.50", stock=7, sku="MUG-1")
    async with browser(app) as guest, browser(app) as stranger:
        empty = await guest.get(CART)
        assert empty.status_code == 200
        assert empty.json() == {
            "id": None,
            "items": [],
            "coupon": None,
            "coupon_error": None,
            "subtotal": "0.00",
            "discount_total": "0.00",
            "shipping_total": "0.00",
            "tax_total": "0.00",
            "total": "0.00",
            "currency": "USD",
            "item_count": 0,
            "expires_at": None,
        }
        assert "set-cookie" not in empty.headers
        assert await count(services, Cart) == 0  # reading creates nothing

        added = await add(guest, thing["id"], 2)
        assert added.status_code == 201, added.text
        cookie = added.headers["set-cookie"]
        assert cookie.startswith("mercato_cart=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert f"Max-Age={THIRTY_DAYS}" in cookie and "Secure" not in cookie  # no TLS in tests
        token = guest.cookies["mercato_cart"]
        body = added.json()
        assert body["item_count"] == 2 and body["subtotal"] == "25.00" and body["total"] == "25.00"
        [line] = body["items"]
        assert line["product_id"] == thing["id"] and line["variant_id"] is None
        assert (line["name"], line["sku"], line["unit_price"], line["line_total"], line["available"]) == (
            thing["name"],
            "MUG-1",
            "12.50",
            "25.00",
            7,
        )
        expires = datetime.fromisoformat(body["expires_at"])
        assert timedelta(days=29, hours=23) < expires - clock.now() <= timedelta(days=30)

        again = await guest.get(CART)
        assert again.json() == body

        async with services.db.session(write=False) as session:
            cart = (await session.execute(select(Cart))).scalar_one()
        assert cart.token_hash == hashlib.sha256(token.encode()).hexdigest() and cart.user_id is None
        assert str(cart.id) == body["id"]

        # another browser without the cookie sees nothing of it, and cannot touch its lines
        other = (await stranger.get(CART)).json()
        assert other["id"] is None and other["items"] == []
        assert (await stranger.patch(f"{ITEMS}/{line['id']}", json={"quantity": 1})).status_code == 404
        assert (await stranger.delete(f"{ITEMS}/{line['id']}")).status_code == 404
        # a made-up cookie is just a stranger without a cart
        stranger.cookies.set("mercato_cart", "forged-token")
        assert (await stranger.get(CART)).json()["id"] is None
        assert (await guest.get(CART)).json()["item_count"] == 2
        assert await count(services, Cart) == 1


async def test_user_cart_adds_the_same_line_twice(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    thing = await product(client, admin, price="3.10", stock=20)
    user = bearer(await register(client))
    first = await add(client, thing["id"], 2, headers=user)
    assert first.status_code == 201
    assert "mercato_cart" not in first.headers.get("set-cookie", "")
    second = await add(client, thing["id"], 3, headers=user)
    assert second.status_code == 201
    body = second.json()
    assert len(body["items"]) == 1
    assert (body["items"][0]["quantity"], body["items"][0]["line_total"]) == (5, "15.50")
    assert (body["item_count"], body["subtotal"], body["total"]) == (5, "15.50", "15.50")
    async with services.db.session(write=False) as session:
        cart = (await session.execute(select(Cart))).scalar_one()
    assert str(cart.user_id) != "" and cart.token_hash is None and str(cart.id) == body["id"]
    assert (await client.get(CART, headers=user)).json() == body


async def test_concurrent_first_adds_of_a_user_make_one_cart_with_every_line(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """The first writes of a user without a cart race to create it: one inserts the cart, the others find it (on
    PostgreSQL the unique user_id refuses their insert and only its savepoint is rolled back)."""
    things = [await product(client, admin, stock=5) for _ in range(12)]
    user = bearer(await register(client))
    answers = await asyncio.gather(*(add(client, thing["id"], 1, headers=user) for thing in things))
    assert [answer.status_code for answer in answers] == [201] * 12, [answer.text for answer in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert await count(services, Cart) == 1
    cart = (await client.get(CART, headers=user)).json()
    assert sorted(line["product_id"] for line in cart["items"]) == sorted(thing["id"] for thing in things)
    assert cart["item_count"] == 12


async def test_cookie_signed_in_writes_need_the_csrf_header(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    thing = await product(client, admin)
    async with browser(app) as web:
        await register(web)  # signs the browser in by cookie
        refused = await add(web, thing["id"], 1)
        assert refused.status_code == 403
        csrf = {"X-CSRF-Token": web.cookies["mercato_csrf"]}
        assert (await add(web, thing["id"], 1, headers=csrf)).status_code == 201
    assert await count(services, CartItem) == 1


# --- line rules -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quantity", [0, -1, 101, 1.5, "x", "2", None, True])
async def test_bad_quantities_are_422_and_change_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services, quantity: Any
) -> None:
    thing = await product(client, admin, stock=500)
    user = bearer(await register(client))
    assert (await add(client, thing["id"], 2, headers=user)).status_code == 201
    before = await lines(services)

    refused = await add(client, thing["id"], quantity, headers=user)
    assert refused.status_code == 422
    assert refused.json()["type"] == "https://mercato.dev/problems/validation-error"
    assert refused.json()["errors"][0]["loc"] == ["body", "quantity"]

    item_id = (await client.get(CART, headers=user)).json()["items"][0]["id"]
    if quantity not in (0,):  # 0 is a valid new quantity (it removes the line)
        for method in ("PUT", "PATCH"):
            update = await client.request(method, f"{ITEMS}/{item_id}", json={"quantity": quantity}, headers=user)
            assert update.status_code == 422, (method, update.text)
            assert update.json()["errors"][0]["loc"] == ["body", "quantity"]
    bulk = await client.post(
        f"{ITEMS}/bulk",
        json={"items": [{"product_id": thing["id"], "quantity": 1}, {"product_id": thing["id"], "quantity": quantity}]},
        headers=user,
    )
    assert bulk.status_code == 422
    assert await lines(services) == before
    assert (await client.get(CART, headers=user)).json()["item_count"] == 2


async def test_unknown_fields_are_refused(client: httpx.AsyncClient, admin: dict[str, str], services: Services) -> None:
    thing = await product(client, admin)
    async_body = {"product_id": thing["id"], "quantity": 1, "unit_price": "0.01"}
    refused = await client.post(ITEMS, json=async_body, headers=bearer(await register(client)))
    assert refused.status_code == 422
    assert await count(services, Cart) == 0


async def test_more_than_available_is_409_and_the_cart_is_unchanged(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    thing = await product(client, admin, stock=3)
    async with browser(app) as guest:
        too_many = await add(guest, thing["id"], 4)
        assert too_many.status_code == 409
        assert too_many.json()["type"] == "https://mercato.dev/problems/insufficient-stock"
        assert too_many.json()["available"] == 3 and too_many.json()["product_id"] == thing["id"]
        assert "set-cookie" not in too_many.headers
        assert await count(services, Cart) == 0  # the refused first write created no cart

        assert (await add(guest, thing["id"], 2)).status_code == 201
        before = await lines(services)
        again = await add(guest, thing["id"], 2)  # 2 + 2 > 3
        assert again.status_code == 409 and again.json()["available"] == 3
        item_id = (await guest.get(CART)).json()["items"][0]["id"]
        raised = await guest.put(f"{ITEMS}/{item_id}", json={"quantity": 4})
        assert raised.status_code == 409
        assert await lines(services) == before
        assert (await add(guest, thing["id"], 1)).json()["item_count"] == 3  # exactly what is available


async def test_a_line_holds_at_most_100_units(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    thing = await product(client, admin, stock=1000)
    user = bearer(await register(client))
    assert (await add(client, thing["id"], 60, headers=user)).status_code == 201
    refused = await add(client, thing["id"], 41, headers=user)
    assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["body", "quantity"]
    assert (await add(client, thing["id"], 40, headers=user)).json()["item_count"] == 100
    assert await lines(services) == [(uuid.UUID((await client.get(CART, headers=user)).json()["id"]), None, 100)]


async def test_unknown_inactive_and_deleted_products_are_404(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    user = bearer(await register(client))
    draft = await product(client, admin, status="draft")
    deleted = await product(client, admin)
    assert (await client.delete(f"/api/v1/products/{deleted['id']}", headers=admin)).status_code == 204
    for product_id in (str(uuid.uuid4()), draft["id"], deleted["id"]):
        refused = await add(client, product_id, 1, headers=user)
        assert refused.status_code == 404, refused.text
        assert refused.json()["type"] == "https://mercato.dev/problems/not-found"
    assert (await add(client, "not-a-uuid", 1, headers=user)).status_code == 422
    assert await count(services, Cart) == 0


async def test_a_variant_priced_below_zero_sells_at_zero_as_the_catalog_shows_it(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """API.md "Catalog": a variant costs the product's price plus its modifier, never below zero — in the cart too,
    also after the product's price drops below the discount."""
    mug = await product(
        client,
        admin,
        price="5.00",
        stock=None,
        variants=[{"sku": "MUG-B", "name": "B", "price_modifier": "-2.00", "stock": 4}],
    )
    variant = mug["variants"][0]["id"]
    user = bearer(await register(client))
    assert (await add(client, mug["id"], 1, variant_id=variant, headers=user)).json()["subtotal"] == "3.00"
    cheaper = await client.patch(f"/api/v1/products/{mug['id']}", json={"price": "1.00"}, headers=admin)
    assert cheaper.status_code == 200 and cheaper.json()["variants"][0]["price"] == "0.00"
    cart = await client.get("/api/v1/cart", headers=user)
    assert cart.status_code == 200, cart.text
    assert (cart.json()["items"][0]["unit_price"], cart.json()["total"]) == ("0.00", "0.00")


async def test_variants_are_sold_by_variant(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    tee = await product(
        client,
        admin,
        name="Monospace Tee",
        price="24.00",
        stock=None,
        variants=[
            {"sku": "TEE-S", "name": "S", "stock": 5},
            {"sku": "TEE-L", "name": "L", "price_modifier": "2.50", "stock": 1},
        ],
    )
    small, large = (variant["id"] for variant in tee["variants"])
    other = await product(client, admin, stock=None, variants=[{"sku": "OTHER-1", "name": "One", "stock": 3}])
    user = bearer(await register(client))

    no_variant = await add(client, tee["id"], 1, headers=user)
    assert no_variant.status_code == 422 and no_variant.json()["errors"][0]["loc"] == ["body", "variant_id"]
    wrong = await add(client, tee["id"], 1, variant_id=other["variants"][0]["id"], headers=user)
    assert wrong.status_code == 404
    plain = await product(client, admin)
    assert (await add(client, plain["id"], 1, variant_id=small, headers=user)).status_code == 404
    assert await count(services, CartItem) == 0

    assert (await add(client, tee["id"], 2, variant_id=small, headers=user)).status_code == 201
    body = (await add(client, tee["id"], 1, variant_id=large, headers=user)).json()
    assert [(i["variant_id"], i["name"], i["sku"], i["unit_price"], i["available"]) for i in body["items"]] == [
        (small, "Monospace Tee – S", "TEE-S", "24.00", 5),
        (large, "Monospace Tee – L", "TEE-L", "26.50", 1),
    ]
    assert (body["subtotal"], body["item_count"]) == ("74.50", 3)
    assert (await add(client, tee["id"], 1, variant_id=large, headers=user)).status_code == 409  # one L only


async def test_update_remove_and_clear(client: httpx.AsyncClient, admin: dict[str, str], services: Services) -> None:
    first = await product(client, admin, price="2.00")
    second = await product(client, admin, price="5.00")
    user = bearer(await register(client))
    await add(client, first["id"], 1, headers=user)
    body = (await add(client, second["id"], 1, headers=user)).json()
    one, two = (item["id"] for item in body["items"])

    updated = await client.put(f"{ITEMS}/{one}", json={"quantity": 4}, headers=user)
    assert updated.status_code == 200
    assert [(i["id"], i["quantity"], i["line_total"]) for i in updated.json()["items"]] == [
        (one, 4, "8.00"),
        (two, 1, "5.00"),
    ]
    patched = await client.patch(f"{ITEMS}/{two}", json={"quantity": 0}, headers=user)
    assert patched.status_code == 200
    assert [i["id"] for i in patched.json()["items"]] == [one] and patched.json()["total"] == "8.00"
    assert (await client.patch(f"{ITEMS}/{two}", json={"quantity": 1}, headers=user)).status_code == 404

    await add(client, second["id"], 2, headers=user)
    removed = await client.delete(f"{ITEMS}/{one}", headers=user)
    assert removed.status_code == 204 and removed.content == b""
    assert (await client.delete(f"{ITEMS}/{one}", headers=user)).status_code == 404
    assert (await client.delete(f"{ITEMS}/{uuid.uuid4()}", headers=user)).status_code == 404
    assert [i["quantity"] for i in (await client.get(CART, headers=user)).json()["items"]] == [2]

    cleared = await client.delete(CART, headers=user)
    assert cleared.status_code == 204
    after = (await client.get(CART, headers=user)).json()
    assert after["items"] == [] and after["item_count"] == 0 and after["total"] == "0.00"
    assert after["id"] == body["id"]  # the cart stays, empty
    assert await count(services, CartItem) == 0
    # clearing without a cart creates nothing
    other = bearer(await register(client))
    assert (await client.delete(CART, headers=other)).status_code == 204
    assert await count(services, Cart) == 1


async def test_bulk_add_is_all_or_nothing(client: httpx.AsyncClient, admin: dict[str, str], services: Services) -> None:
    cheap = await product(client, admin, price="1.00", stock=10)
    rare = await product(client, admin, price="9.00", stock=1)
    user = bearer(await register(client))
    assert (await add(client, cheap["id"], 1, headers=user)).status_code == 201
    before = await lines(services)

    over = await client.post(
        f"{ITEMS}/bulk",
        json={"items": [{"product_id": cheap["id"], "quantity": 2}, {"product_id": rare["id"], "quantity": 2}]},
        headers=user,
    )
    assert over.status_code == 409 and over.json()["product_id"] == rare["id"]
    unknown = await client.post(
        f"{ITEMS}/bulk",
        json={"items": [{"product_id": cheap["id"], "quantity": 2}, {"product_id": str(uuid.uuid4()), "quantity": 1}]},
        headers=user,
    )
    assert unknown.status_code == 404
    assert (await client.post(f"{ITEMS}/bulk", json={"items": []}, headers=user)).status_code == 422
    assert await lines(services) == before

    done = await client.post(
        f"{ITEMS}/bulk",
        json={
            "items": [
                {"product_id": rare["id"], "quantity": 1},
                {"product_id": cheap["id"], "quantity": 2},
                {"product_id": cheap["id"], "quantity": 3},
            ]
        },
        headers=user,
    )
    assert done.status_code == 201, done.text
    body = done.json()
    assert [(i["product_id"], i["quantity"]) for i in body["items"]] == [(cheap["id"], 6), (rare["id"], 1)]
    assert (body["subtotal"], body["item_count"]) == ("15.00", 7)


async def test_guest_bulk_add_creates_the_cart_with_a_cookie(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str]
) -> None:
    first = await product(client, admin, price="1.00")
    second = await product(client, admin, price="2.00")
    async with browser(app) as guest:
        response = await guest.post(
            f"{ITEMS}/bulk",
            json={"items": [{"product_id": second["id"], "quantity": 1}, {"product_id": first["id"], "quantity": 1}]},
        )
        assert response.status_code == 201
        assert "mercato_cart" in guest.cookies
        assert [i["product_id"] for i in response.json()["items"]] == [second["id"], first["id"]]
        assert (await guest.get(CART)).json()["subtotal"] == "3.00"


# --- prices and totals ------------------------------------------------------------------------------------------


async def test_cart_shows_current_prices_and_lines_no_longer_for_sale(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    thing = await product(client, admin, price="10.00")
    gone = await product(client, admin, price="4.00")
    user = bearer(await register(client))
    await add(client, thing["id"], 2, headers=user)
    await add(client, gone["id"], 1, headers=user)
    assert (await client.get(CART, headers=user)).json()["subtotal"] == "24.00"

    changed = await client.patch(f"/api/v1/products/{thing['id']}", json={"price": "7.25"}, headers=admin)
    assert changed.status_code == 200, changed.text
    assert (await client.delete(f"/api/v1/products/{gone['id']}", headers=admin)).status_code == 204

    body = (await client.get(CART, headers=user)).json()
    assert [(i["unit_price"], i["line_total"], i["available"]) for i in body["items"]] == [
        ("7.25", "14.50", 10),
        (None, None, 0),
    ]
    assert body["items"][1]["name"] is None and body["items"][1]["quantity"] == 1
    assert (body["subtotal"], body["total"], body["item_count"]) == ("14.50", "14.50", 2)
    gone_id = body["items"][1]["id"]
    assert (await client.patch(f"{ITEMS}/{gone_id}", json={"quantity": 2}, headers=user)).status_code == 404
    removed = await client.patch(f"{ITEMS}/{gone_id}", json={"quantity": 0}, headers=user)
    assert removed.status_code == 200 and len(removed.json()["items"]) == 1


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prices=st.lists(st.integers(0, 99_999), min_size=1, max_size=3),
    quantities=st.lists(st.integers(1, 100), min_size=3, max_size=3),
    percent=st.integers(1, 100),
)
async def test_totals_are_rounded_half_even(
    client: httpx.AsyncClient,
    app: Any,
    admin: dict[str, str],
    prices: list[int],
    quantities: list[int],
    percent: int,
) -> None:
    code = f"P{uuid.uuid4().hex[:10]}"
    await coupon(client, admin, code, value=str(percent))
    things = [await product(client, admin, price=str(Decimal(cents_) / 100), stock=100) for cents_ in prices]
    async with browser(app) as guest:
        items = [{"product_id": t["id"], "quantity": q} for t, q in zip(things, quantities, strict=False)]
        assert (await guest.post(f"{ITEMS}/bulk", json={"items": items})).status_code == 201
        body = (await guest.post(f"{CART}/apply-coupon", json={"code": code.lower()})).json()
    expected_lines = [Decimal(p) / 100 * q for p, q in zip(prices, quantities, strict=False)]
    subtotal = sum(expected_lines, Decimal("0"))
    discount = cents(subtotal * percent / 100)
    assert [Decimal(i["line_total"]) for i in body["items"]] == expected_lines
    assert Decimal(body["subtotal"]) == subtotal
    assert Decimal(body["discount_total"]) == discount
    assert Decimal(body["total"]) == subtotal - discount
    assert body["item_count"] == sum(quantities[: len(prices)])
    assert body["coupon"] == {"code": code.upper(), "type": "percentage", "value": f"{percent}.00"}


async def test_half_even_discount_examples(client: httpx.AsyncClient, app: Any, admin: dict[str, str]) -> None:
    await coupon(client, admin, "TENOFF", value="10")
    for price, discount, total in (("0.25", "0.02", "0.23"), ("0.35", "0.04", "0.31")):
        thing = await product(client, admin, price=price)
        async with browser(app) as guest:
            await add(guest, thing["id"], 1)
            body = (await guest.post(f"{CART}/apply-coupon", json={"code": "TENOFF"})).json()
        assert (body["subtotal"], body["discount_total"], body["total"]) == (price, discount, total)


# --- coupons ----------------------------------------------------------------------------------------------------


async def test_apply_and_remove_a_coupon(client: httpx.AsyncClient, admin: dict[str, str], services: Services) -> None:
    await coupon(client, admin, "TENOFF", value="10", min_purchase="20.00")
    await coupon(client, admin, "FIVE", type="fixed", value="5")
    thing = await product(client, admin, price="15.00")
    user = bearer(await register(client))
    await add(client, thing["id"], 2, headers=user)

    applied = await client.post(f"{CART}/apply-coupon", json={"code": "tenoff"}, headers=user)
    assert applied.status_code == 200, applied.text
    body = applied.json()
    assert body["coupon"] == {"code": "TENOFF", "type": "percentage", "value": "10.00"}
    assert (body["subtotal"], body["discount_total"], body["total"]) == ("30.00", "3.00", "27.00")

    unknown = await client.post(f"{CART}/apply-coupon", json={"code": "NOPE"}, headers=user)
    assert unknown.status_code == 422
    assert unknown.json()["type"] == "https://mercato.dev/problems/coupon-invalid"
    assert unknown.json()["reason"] == "not_found"
    assert (await client.get(CART, headers=user)).json()["coupon"]["code"] == "TENOFF"  # unchanged

    # the coupon stops applying when the subtotal drops below its minimum: no discount, and the cart says why
    item_id = body["items"][0]["id"]
    lowered = (await client.patch(f"{ITEMS}/{item_id}", json={"quantity": 1}, headers=user)).json()
    assert lowered["coupon"] is None and lowered["discount_total"] == "0.00" and lowered["total"] == "15.00"
    assert lowered["coupon_error"]["code"] == "TENOFF" and lowered["coupon_error"]["reason"] == "below_minimum"
    below = await client.post(f"{CART}/apply-coupon", json={"code": "TENOFF"}, headers=user)
    assert below.status_code == 422 and below.json()["reason"] == "below_minimum"

    fixed = (await client.post(f"{CART}/apply-coupon", json={"code": "five"}, headers=user)).json()
    assert (fixed["coupon"]["type"], fixed["discount_total"], fixed["total"]) == ("fixed", "5.00", "10.00")
    assert fixed["coupon_error"] is None

    removed = await client.delete(f"{CART}/remove-coupon", headers=user)
    assert removed.status_code == 200
    assert (removed.json()["coupon"], removed.json()["discount_total"], removed.json()["total"]) == (
        None,
        "0.00",
        "15.00",
    )
    async with services.db.session(write=False) as session:
        assert await session.scalar(select(Cart.coupon_code)) is None


async def test_a_deleted_coupon_gives_no_discount(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    await coupon(client, admin, "GONE", value="50")
    thing = await product(client, admin, price="8.00")
    async with browser(app) as guest:
        applied = await guest.post(f"{CART}/apply-coupon", json={"code": "GONE"})
        assert applied.status_code == 200  # a guest's first write may be a coupon: the cart is created
        assert "mercato_cart" in guest.cookies and applied.json()["discount_total"] == "0.00"
        await add(guest, thing["id"], 1)
        assert (await guest.get(CART)).json()["discount_total"] == "4.00"
        assert (await client.delete("/api/v1/coupons/GONE", headers=admin)).status_code == 204
        body = (await guest.get(CART)).json()
        assert (body["coupon"], body["coupon_error"]["reason"], body["total"]) == (None, "not_found", "8.00")
        # removing without a cart creates nothing
    async with browser(app) as stranger:
        assert (await stranger.delete(f"{CART}/remove-coupon")).json()["id"] is None
    assert await count(services, Cart) == 1


# --- sign-in merge ----------------------------------------------------------------------------------------------


async def test_login_merges_the_guest_cart(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    scarce = await product(client, admin, price="4.00", stock=5)
    plenty = await product(client, admin, price="1.00", stock=50)
    gone = await product(client, admin, price="3.00", stock=5)
    await coupon(client, admin, "GUEST10", value="10")
    tokens = await register(client)
    user = bearer(tokens)
    await add(client, scarce["id"], 3, headers=user)

    async with browser(app) as web:
        assert (await add(web, plenty["id"], 2)).status_code == 201
        assert (await add(web, scarce["id"], 4)).status_code == 201
        assert (await add(web, gone["id"], 1)).status_code == 201
        assert (await web.post(f"{CART}/apply-coupon", json={"code": "GUEST10"})).status_code == 200
        assert (await client.delete(f"/api/v1/products/{gone['id']}", headers=admin)).status_code == 204
        assert await count(services, Cart) == 2

        signed_in = await web.post(
            "/api/v1/auth/login", json={"email": tokens["user"]["email"], "password": STRONG_PASSWORD}
        )
        assert signed_in.status_code == 200
        deleted = [c for c in signed_in.headers.get_list("set-cookie") if c.startswith("mercato_cart=")]
        assert len(deleted) == 1 and ("Max-Age=0" in deleted[0] or "expires=" in deleted[0].lower())
        assert "mercato_cart" not in web.cookies
        body = (await web.get(CART)).json()  # now the user's cart, by the access cookie

    assert body == (await client.get(CART, headers=user)).json()
    # summed and capped by stock (3 + 4 > 5), the guest line moved, the unsellable line dropped
    assert [(i["product_id"], i["quantity"]) for i in body["items"]] == [(scarce["id"], 5), (plenty["id"], 2)]
    assert body["coupon"]["code"] == "GUEST10"  # the user's cart had none
    assert (body["subtotal"], body["discount_total"]) == ("22.00", "2.20")
    assert await count(services, Cart) == 1
    assert await count(services, Cart, Cart.token_hash.is_not(None)) == 0


async def test_merge_keeps_the_users_coupon_and_lines(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    thing = await product(client, admin, price="10.00", stock=2)
    await coupon(client, admin, "MINE", value="20")
    await coupon(client, admin, "THEIRS", value="10")
    tokens = await register(client)
    user = bearer(tokens)
    await add(client, thing["id"], 2, headers=user)
    await client.post(f"{CART}/apply-coupon", json={"code": "MINE"}, headers=user)
    async with browser(app) as web:
        await add(web, thing["id"], 1)
        await web.post(f"{CART}/apply-coupon", json={"code": "THEIRS"})
        login = await web.post(
            "/api/v1/auth/login", json={"email": tokens["user"]["email"], "password": STRONG_PASSWORD}
        )
        assert login.status_code == 200
    body = (await client.get(CART, headers=user)).json()
    assert [i["quantity"] for i in body["items"]] == [2] and body["coupon"]["code"] == "MINE"
    assert await count(services, Cart) == 1


async def test_registration_takes_the_guest_cart(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    thing = await product(client, admin, price="6.00", stock=4)
    async with browser(app) as web:
        guest_cart = (await add(web, thing["id"], 3)).json()
        tokens = await register(web)
        assert "mercato_cart" not in web.cookies
    body = (await client.get(CART, headers=bearer(tokens))).json()
    assert [(i["product_id"], i["quantity"], i["id"]) for i in body["items"]] == [
        (thing["id"], 3, guest_cart["items"][0]["id"])
    ]
    assert body["id"] != guest_cart["id"]
    async with services.db.session(write=False) as session:
        cart = (await session.execute(select(Cart))).scalar_one()
    assert str(cart.user_id) == tokens["user"]["id"] and cart.token_hash is None


async def test_login_without_a_guest_cart_leaves_the_user_cart_alone(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    thing = await product(client, admin)
    tokens = await register(client)
    await add(client, thing["id"], 2, headers=bearer(tokens))
    async with browser(app) as web:
        web.cookies.set("mercato_cart", "stale-or-forged", domain="testserver.local")
        login = await web.post(
            "/api/v1/auth/login", json={"email": tokens["user"]["email"], "password": STRONG_PASSWORD}
        )
        assert login.status_code == 200 and "mercato_cart" not in web.cookies
    assert [i["quantity"] for i in (await client.get(CART, headers=bearer(tokens))).json()["items"]] == [2]
    assert await count(services, Cart) == 1


async def test_oidc_sign_in_merges_the_guest_cart(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services, issuer: Issuer
) -> None:
    thing = await product(client, admin, price="2.00", stock=3)
    async with browser(app) as web:
        await add(web, thing["id"], 2)
        response = await sign_in(web)
        assert response.status_code == 200, response.text
        assert "mercato_cart" not in web.cookies
        body = response.json()
    cart = (await client.get(CART, headers=bearer(body))).json()
    assert [(i["product_id"], i["quantity"]) for i in cart["items"]] == [(thing["id"], 2)]
    async with services.db.session(write=False) as session:
        row = (await session.execute(select(Cart))).scalar_one()
    assert str(row.user_id) == body["user"]["id"] and row.token_hash is None


# --- isolation --------------------------------------------------------------------------------------------------


async def test_another_customers_item_ids_are_404(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    thing = await product(client, admin)
    alice = bearer(await register(client))
    bob = bearer(await register(client))
    alices_item = (await add(client, thing["id"], 2, headers=alice)).json()["items"][0]["id"]
    await add(client, thing["id"], 1, headers=bob)
    before = await lines(services)
    for method, body in (("PUT", {"quantity": 5}), ("PATCH", {"quantity": 0}), ("DELETE", None)):
        response = await client.request(method, f"{ITEMS}/{alices_item}", json=body, headers=bob)
        assert response.status_code == 404, (method, response.text)
    async with browser(app) as guest:
        assert (await guest.delete(f"{ITEMS}/{alices_item}")).status_code == 404
    assert await lines(services) == before
    assert (await client.get(CART, headers=bob)).json()["item_count"] == 1


# --- expiry -----------------------------------------------------------------------------------------------------


async def test_the_sweep_deletes_expired_carts_and_spares_changed_ones(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services
) -> None:
    thing = await product(client, admin)
    start = clock.now()
    async with browser(app) as guest, browser(app) as idle, browser(app) as back:
        await add(guest, thing["id"], 1)
        await add(idle, thing["id"], 1)
        await add(back, thing["id"], 2)
        assert await count(services, Job, Job.name.startswith("cart")) == 0  # a cart needs no job row of its own
        try:
            clock.set_clock(lambda: start + timedelta(days=10))
            await add(guest, thing["id"], 1)  # pushes the guest cart's expiry to day 40

            clock.set_clock(lambda: start + timedelta(days=31))
            assert (await idle.get(CART)).json()["id"] is None  # expired: shown as no cart
            # a guest coming back with the old cookie before the sweep: the expired cart goes, a new one starts
            old = back.cookies["mercato_cart"]
            again = await add(back, thing["id"], 1)
            assert again.status_code == 201 and again.json()["item_count"] == 1
            assert back.cookies["mercato_cart"] != old
            assert await count(services, Cart) == 3
            await services.jobs.run_due()
            assert await count(services, Cart) == 2  # the idle cart is gone; the changed and the new one kept
            assert (await guest.get(CART)).json()["item_count"] == 2

            clock.set_clock(lambda: start + timedelta(days=41))
            await services.jobs.run_due()
            assert await count(services, Cart) == 1 and await count(services, CartItem) == 1  # only the new one
            assert (await back.get(CART)).json()["item_count"] == 1
        finally:
            clock.set_clock(None)


async def test_the_sweep_deletes_in_batches_and_runs_once_an_hour(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More expired carts than one batch: every one goes in one pass. The next pass within the hour does not
    sweep; one an hour later does."""
    monkeypatch.setattr(cart_service, "SWEEP_BATCH", 2)
    thing = await product(client, admin, stock=50)
    for _ in range(5):
        async with browser(app) as guest:
            assert (await add(guest, thing["id"], 1)).status_code == 201
    start = clock.now()
    try:
        clock.set_clock(lambda: start + timedelta(days=31))
        await services.jobs.run_due()
        assert await count(services, Cart) == 0 and await count(services, CartItem) == 0

        async with browser(app) as guest:
            assert (await add(guest, thing["id"], 1)).status_code == 201  # expires on day 61
        clock.set_clock(lambda: start + timedelta(days=61, minutes=-30))
        await services.jobs.run_due()  # sweeps nothing; the next sweep is due at day 61 + 30 minutes
        assert await count(services, Cart) == 1
        clock.set_clock(lambda: start + timedelta(days=61, minutes=10))
        await services.jobs.run_due()
        assert await count(services, Cart) == 1  # expired, but the sweep is not due yet
        clock.set_clock(lambda: start + timedelta(days=61, minutes=31))
        await services.jobs.run_due()
        assert await count(services, Cart) == 0 and await count(services, CartItem) == 0
    finally:
        clock.set_clock(None)
