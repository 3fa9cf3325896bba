"""Profiles, addresses, object-level authorisation, admin user management, API keys and the audit log."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select

from mercato.audit.models import AuditLog
from mercato.cart.models import Cart
from mercato.identity import tokens, users_service
from mercato.identity.models import Address, ApiKey, AuthSession, OidcIdentity, User
from mercato.payments.models import PaymentMethod
from mercato.platform.context import Services
from tests.conftest import STRONG_PASSWORD, bearer, make_admin, register, sent_mail, token_from

ADDRESS = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "line1": "1 Main St",
    "city": "Springfield",
    "postal_code": "12345",
    "country": "us",
}


async def rows(services: Services, model: type, *where) -> int:
    async with services.db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def test_profile_get_update(client: httpx.AsyncClient) -> None:
    me = await register(client)
    uid = me["user"]["id"]
    got = await client.get(f"/api/v1/users/{uid}", headers=bearer(me))
    assert got.status_code == 200 and got.json()["email"] == me["user"]["email"]
    patched = await client.patch(
        f"/api/v1/users/{uid}", headers=bearer(me), json={"first_name": "Grace", "phone": "+1 555 0100"}
    )
    assert patched.status_code == 200
    assert patched.json()["first_name"] == "Grace" and patched.json()["phone"] == "+1 555 0100"
    assert (await client.get("/api/v1/auth/me", headers=bearer(me))).json()["first_name"] == "Grace"
    put = await client.put(f"/api/v1/users/{uid}", headers=bearer(me), json={"last_name": "Hopper"})
    assert put.status_code == 200 and put.json()["first_name"] == "Grace" and put.json()["last_name"] == "Hopper"
    refused = await client.patch(f"/api/v1/users/{uid}", headers=bearer(me), json={"role": "admin"})
    assert refused.status_code == 422
    assert (await client.get("/api/v1/auth/me", headers=bearer(me))).json()["role"] == "customer"


async def test_customer_cannot_see_another_user_or_their_addresses(
    client: httpx.AsyncClient, services: Services
) -> None:
    alice = await register(client)
    bob = await register(client)
    created = await client.post(f"/api/v1/users/{bob['user']['id']}/addresses", headers=bearer(bob), json=ADDRESS)
    assert created.status_code == 201
    bob_id, address_id = bob["user"]["id"], created.json()["id"]
    for method, path, body in [
        ("GET", f"/api/v1/users/{bob_id}", None),
        ("PATCH", f"/api/v1/users/{bob_id}", {"first_name": "Mallory"}),
        ("DELETE", f"/api/v1/users/{bob_id}", None),
        ("GET", f"/api/v1/users/{bob_id}/addresses", None),
        ("POST", f"/api/v1/users/{bob_id}/addresses", ADDRESS),
        ("PATCH", f"/api/v1/users/{bob_id}/addresses/{address_id}", {"city": "Elsewhere"}),
        ("DELETE", f"/api/v1/users/{bob_id}/addresses/{address_id}", None),
        ("PATCH", f"/api/v1/users/{alice['user']['id']}/addresses/{address_id}", {"city": "Elsewhere"}),
    ]:
        response = await client.request(method, path, headers=bearer(alice), json=body)
        assert response.status_code == 404, (method, path)
        assert bob["user"]["email"] not in response.text
    async with services.db.session(write=False) as session:
        bob_row = await session.get(User, uuid.UUID(bob_id))
        address = await session.get(Address, uuid.UUID(address_id))
    assert bob_row.first_name is None and bob_row.deleted_at is None
    assert address.city == "Springfield"
    assert await rows(services, Address) == 1


async def test_customer_calling_admin_routes_is_403(client: httpx.AsyncClient) -> None:
    me = await register(client)
    for method, path in [
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/admin/users"),
        ("POST", "/api/v1/admin/users"),
        ("GET", "/api/v1/admin/api-keys"),
        ("GET", "/api/v1/admin/audit-logs"),
        ("PUT", f"/api/v1/admin/users/{me['user']['id']}/role"),
    ]:
        response = await client.request(
            method, path, headers=bearer(me), json={"role": "admin"} if method == "PUT" else None
        )
        assert response.status_code in (403, 422), (method, path)
        if response.status_code == 422:  # body validation runs first for malformed bodies only
            raise AssertionError((method, path, response.text))
    assert (await client.get("/api/v1/auth/me", headers=bearer(me))).json()["role"] == "customer"


async def test_addresses_crud_and_default(client: httpx.AsyncClient) -> None:
    me = await register(client)
    base = f"/api/v1/users/{me['user']['id']}/addresses"
    first = (await client.post(base, headers=bearer(me), json=ADDRESS)).json()
    assert first["country"] == "US" and first["is_default"] is True
    second = await client.post(
        base,
        headers=bearer(me),
        json={**ADDRESS, "country": "GB", "postal_code": "sw1a 1aa", "is_default": True, "label": "work"},
    )
    assert second.status_code == 201
    assert second.json()["postal_code"] == "SW1A 1AA"
    listed = (await client.get(base, headers=bearer(me))).json()
    assert listed["pagination"] == {"page": 1, "limit": 20, "total": 2, "total_pages": 1}
    assert [a["is_default"] for a in listed["data"]] == [True, False]
    assert listed["data"][0]["id"] == second.json()["id"]
    moved = await client.patch(
        f"{base}/{first['id']}", headers=bearer(me), json={"country": "DE", "postal_code": "10115"}
    )
    assert moved.status_code == 200 and moved.json()["country"] == "DE"
    assert (await client.delete(f"{base}/{first['id']}", headers=bearer(me))).status_code == 204
    assert (await client.get(base, headers=bearer(me))).json()["pagination"]["total"] == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"country": "XX"}, "country"),
        ({"country": "USA"}, "country"),
        ({"postal_code": "1234"}, "postal_code"),
        ({"country": "CA", "postal_code": "12345"}, "postal_code"),
        ({"country": "FR", "postal_code": "7500"}, "postal_code"),
        ({"country": "DE", "postal_code": "ABCDE"}, "postal_code"),
        ({"line1": ""}, "line1"),
        ({"nickname": "x"}, "nickname"),
        ({"postal_code": "١٢٣٤٥"}, "postal_code"),  # Arabic-Indic digits are not a US ZIP code
    ],
)
async def test_bad_addresses_are_422_naming_the_field(
    client: httpx.AsyncClient, services: Services, change: dict, field: str
) -> None:
    me = await register(client)
    response = await client.post(
        f"/api/v1/users/{me['user']['id']}/addresses", headers=bearer(me), json={**ADDRESS, **change}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][-1] == field
    assert await rows(services, Address) == 0


async def test_delete_account_anonymises_and_signs_out(client: httpx.AsyncClient, services: Services) -> None:
    admin = await make_admin(services, client)
    thing = await client.post(
        "/api/v1/products",
        headers=bearer(admin),
        json={"name": "Kept", "price": "5.00", "status": "active", "stock": 3},
    )
    bystander = await register(client, "stays@example.com")
    me = await register(client, "gone@example.com", first_name="Gone")
    uid = me["user"]["id"]
    await client.post(f"/api/v1/users/{uid}/addresses", headers=bearer(me), json=ADDRESS)
    for who in (me, bystander):
        card = await client.post("/api/v1/payments/methods", headers=bearer(who), json={"payment_token": "tok_visa"})
        assert card.status_code == 201, card.text
        added = await client.post(
            "/api/v1/cart/items", headers=bearer(who), json={"product_id": thing.json()["id"], "quantity": 1}
        )
        assert added.status_code in (200, 201), added.text
    async with services.db.session(write=True) as session:
        session.add(OidcIdentity(user_id=uuid.UUID(uid), provider="google", subject="g-1", email="gone@example.com"))
    assert (await client.delete(f"/api/v1/users/{uid}", headers=bearer(me))).status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=bearer(me))).status_code == 401
    login = await client.post("/api/v1/auth/login", json={"email": "gone@example.com", "password": STRONG_PASSWORD})
    assert login.status_code == 401
    async with services.db.session(write=False) as session:
        user = await session.get(User, uuid.UUID(uid))
    assert user.deleted_at is not None
    assert user.email != "gone@example.com" and user.first_name is None and user.password_hash is None
    assert await rows(services, Address) == 0
    assert await rows(services, OidcIdentity) == 0
    for model in (PaymentMethod, Cart):  # the bystander's card and cart stay
        assert await rows(services, model, model.user_id == uuid.UUID(uid)) == 0
        assert await rows(services, model) == 1
    assert (
        await rows(services, AuthSession, AuthSession.revoked_at.is_(None), AuthSession.user_id == uuid.UUID(uid)) == 0
    )
    assert await rows(services, AuditLog, AuditLog.action == "user.deleted") == 1
    again = await register(client, "gone@example.com")  # the address is free again
    assert again["user"]["id"] != uid


async def test_admin_lists_users_with_filters_and_pagination(client: httpx.AsyncClient, services: Services) -> None:
    admin = await make_admin(services, client)
    for i in range(3):
        await register(client, f"shopper{i}@example.com")
    listed = await client.get("/api/v1/users", headers=bearer(admin), params={"role": "customer", "limit": 2})
    assert listed.status_code == 200
    body = listed.json()
    assert body["pagination"] == {"page": 1, "limit": 2, "total": 3, "total_pages": 2}
    assert 'rel="next"' in listed.headers["link"] and "page=2" in listed.headers["link"]
    page2 = await client.get(
        "/api/v1/admin/users", headers=bearer(admin), params={"role": "customer", "limit": 2, "page": 2}
    )
    assert len(page2.json()["data"]) == 1 and 'rel="prev"' in page2.headers["link"]
    searched = await client.get("/api/v1/users", headers=bearer(admin), params={"q": "SHOPPER1"})
    assert [u["email"] for u in searched.json()["data"]] == ["shopper1@example.com"]
    for params in ({"limit": 0}, {"limit": 101}, {"page": 0}, {"role": "wizard"}):
        assert (await client.get("/api/v1/users", headers=bearer(admin), params=params)).status_code == 422


async def test_role_change_applies_at_once_and_is_audited(client: httpx.AsyncClient, services: Services) -> None:
    admin = await make_admin(services, client)
    shopper = await register(client)
    uid = shopper["user"]["id"]
    changed = await client.put(f"/api/v1/admin/users/{uid}/role", headers=bearer(admin), json={"role": "sales"})
    assert changed.status_code == 200 and changed.json()["role"] == "sales"
    assert (await client.get("/api/v1/auth/me", headers=bearer(shopper))).status_code == 401
    async with services.db.session(write=False) as session:
        entry = (await session.execute(select(AuditLog).where(AuditLog.action == "user.role_changed"))).scalar_one()
    assert entry.entity_id == uid
    assert entry.changes == {"role": ["customer", "sales"]}
    assert str(entry.actor_id) == admin["user"]["id"]
    logs = await client.get("/api/v1/admin/audit-logs", headers=bearer(admin), params={"action": "user.role_changed"})
    assert logs.status_code == 200 and logs.json()["data"][0]["entity_id"] == uid
    missing = await client.put(
        f"/api/v1/admin/users/{uuid.uuid4()}/role", headers=bearer(admin), json={"role": "sales"}
    )
    assert missing.status_code == 404


async def test_staff_invitation_sets_password_by_email(client: httpx.AsyncClient, services: Services) -> None:
    admin = await make_admin(services, client)
    invited = await client.post(
        "/api/v1/admin/users",
        headers=bearer(admin),
        json={"email": "Clerk@Example.com", "role": "procurement", "first_name": "Pat"},
    )
    assert invited.status_code == 201
    assert invited.json()["role"] == "procurement" and invited.json()["email"] == "clerk@example.com"
    cannot_login = await client.post(
        "/api/v1/auth/login", json={"email": "clerk@example.com", "password": STRONG_PASSWORD}
    )
    assert cannot_login.status_code == 401
    mail = (await sent_mail(services, "clerk@example.com"))[0]
    accepted = await client.post(
        "/api/v1/auth/reset-password", json={"token": token_from(mail), "password": "clerk-pass-2026"}
    )
    assert accepted.status_code == 200 and accepted.json()["email_verified"] is True
    ok = await client.post("/api/v1/auth/login", json={"email": "clerk@example.com", "password": "clerk-pass-2026"})
    assert ok.status_code == 200 and ok.json()["user"]["role"] == "procurement"
    dup = await client.post(
        "/api/v1/admin/users", headers=bearer(admin), json={"email": "clerk@example.com", "role": "sales"}
    )
    assert dup.status_code == 409


async def test_an_invitation_that_loses_the_race_for_its_email_is_409(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two invitations of one email at once both pass the "email free?" check on PostgreSQL before either inserts;
    the loser then meets the unique constraint. Made deterministic here by a check that answers "free" although
    the account exists: the answer must be the same 409 as a later duplicate, not a 500."""
    admin = await make_admin(services, client)
    body = {"email": "twice@example.com", "role": "sales"}
    assert (await client.post("/api/v1/admin/users", headers=bearer(admin), json=body)).status_code == 201

    async def free(*_: object) -> bool:
        return False

    monkeypatch.setattr(users_service.repository, "email_exists", free)
    lost = await client.post("/api/v1/admin/users", headers=bearer(admin), json=body)
    assert lost.status_code == 409 and lost.json()["type"].endswith("/conflict"), lost.text
    assert await rows(services, User, User.email == "twice@example.com") == 1


async def test_api_keys_shown_once_listed_and_revoked(client: httpx.AsyncClient, services: Services) -> None:
    admin = await make_admin(services, client)
    created = await client.post("/api/v1/admin/api-keys", headers=bearer(admin), json={"name": "erp", "role": "admin"})
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("mk_")
    listed = await client.get("/api/v1/admin/api-keys", headers=bearer(admin))
    assert listed.json()["pagination"]["total"] == 1
    assert key not in listed.text and "key_hash" not in listed.text
    client.cookies.clear()
    with_key = await client.get("/api/v1/admin/users", headers={"X-API-Key": key})
    assert with_key.status_code == 200
    assert (await client.get("/api/v1/auth/me", headers={"X-API-Key": key})).status_code == 403
    key_id = created.json()["id"]
    assert (await client.delete(f"/api/v1/admin/api-keys/{key_id}", headers=bearer(admin))).status_code == 204
    assert (await client.get("/api/v1/admin/users", headers={"X-API-Key": key})).status_code == 401
    assert (await client.get("/api/v1/admin/users", headers={"X-API-Key": "mk_made_up"})).status_code == 401
    sales_key = (
        await client.post("/api/v1/admin/api-keys", headers=bearer(admin), json={"name": "bot", "role": "sales"})
    ).json()["key"]
    assert (await client.get("/api/v1/admin/users", headers={"X-API-Key": sales_key})).status_code == 403


async def test_actions_taken_with_an_api_key_name_the_key(client: httpx.AsyncClient, services: Services) -> None:
    admin = await make_admin(services, client)
    created = (
        await client.post("/api/v1/admin/api-keys", headers=bearer(admin), json={"name": "hr-sync", "role": "admin"})
    ).json()
    shopper = await register(client)
    client.cookies.clear()
    changed = await client.put(
        f"/api/v1/admin/users/{shopper['user']['id']}/role",
        headers={"X-API-Key": created["key"]},
        json={"role": "sales"},
    )
    assert changed.status_code == 200
    logs = await client.get("/api/v1/admin/audit-logs", headers=bearer(admin), params={"action": "user.role_changed"})
    entry = logs.json()["data"][0]
    assert entry["api_key_id"] == created["id"] and entry["actor_id"] is None
    by_user = await client.put(
        f"/api/v1/admin/users/{shopper['user']['id']}/role", headers=bearer(admin), json={"role": "customer"}
    )
    assert by_user.status_code == 200
    latest = (await client.get("/api/v1/admin/audit-logs", headers=bearer(admin))).json()["data"][0]
    assert latest["action"] == "user.role_changed"
    assert latest["actor_id"] == admin["user"]["id"] and latest["api_key_id"] is None


async def test_api_keys_cannot_be_customers_or_vendors(client: httpx.AsyncClient, services: Services) -> None:
    """A key acts for no user: as a vendor it would own every product that has no vendor (the store's own)."""
    admin = await make_admin(services, client)
    for role in ("vendor", "customer"):
        refused = await client.post(
            "/api/v1/admin/api-keys", headers=bearer(admin), json={"name": "shop-sync", "role": role}
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["loc"][-1] == "role"
    assert await rows(services, ApiKey) == 0
    # a vendor key stored before the rule: it no longer authenticates
    key = "mk_" + "v" * 40
    async with services.db.session(write=True) as session:
        session.add(ApiKey(name="old", role="vendor", prefix=key[:9], key_hash=tokens.digest(key)))
    client.cookies.clear()
    assert (await client.get("/api/v1/inventory", headers={"X-API-Key": key})).status_code == 401
