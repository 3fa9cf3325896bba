"""Coupons (API.md "Coupons"): CRUD, bulk codes, soft delete, who may do what, validation and its reasons,
the eligibility check other domains call, and the usage limits under concurrency (``redeem``/``release``)."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mercato.cart.models import Cart
from mercato.cart.rules import Discount
from mercato.platform import clock
from mercato.platform.context import Services
from mercato.promotions import service as promotions
from mercato.promotions.errors import CouponInvalid
from mercato.promotions.models import Coupon, CouponRedemption
from tests.conftest import bearer, make_admin, register

C = "/api/v1/coupons"
FULL_FIELDS = {
    "id",
    "code",
    "type",
    "value",
    "description",
    "min_purchase",
    "currency",
    "starts_at",
    "expires_at",
    "usage_limit",
    "per_user_limit",
    "used_count",
    "is_public",
    "created_at",
    "updated_at",
    "deleted_at",
}
PUBLIC_FIELDS = {"code", "type", "value", "description", "min_purchase", "currency", "starts_at", "expires_at"}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def coupon_count(services: Services, *where: Any) -> int:
    async with services.db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(Coupon).where(*where)) or 0)


async def stored(services: Services, code: str) -> Coupon:
    async with services.db.session(write=False) as session:
        coupon = (await session.execute(select(Coupon).where(Coupon.code == code))).scalar_one()
        return coupon


@pytest.fixture
async def admin(services: Services, client: httpx.AsyncClient) -> dict[str, str]:
    tokens = await make_admin(services, client)
    client.cookies.clear()  # bearer only: a session cookie would make the "anonymous" requests signed in
    return bearer(tokens)


@pytest.fixture
async def customer(client: httpx.AsyncClient) -> dict[str, Any]:
    tokens = await register(client)
    client.cookies.clear()
    return tokens


async def create(client: httpx.AsyncClient, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"code": f"C{uuid.uuid4().hex[:8]}", "type": "percentage", "value": "10", **fields}
    response = await client.post(C, json=body, headers=admin)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def redeem_once(services: Services, code: str, **who: Any) -> Coupon:
    async with services.db.session(write=True) as session:
        return await promotions.redeem(
            session,
            code,
            order_id=clock.new_id(),
            user_id=who.get("user_id"),
            email=who.get("email"),
            subtotal=Decimal(who.get("subtotal", "100.00")),
            now=clock.now(),
        )


# --- CRUD ------------------------------------------------------------------------------------------------------


async def test_create_and_read_coupon(
    client: httpx.AsyncClient, admin: dict[str, str], customer: dict[str, Any], services: Services
) -> None:
    starts, ends = datetime(2026, 1, 1, tzinfo=UTC), datetime(2099, 1, 1, tzinfo=UTC)
    created = await create(
        client,
        admin,
        code="welcome10",
        value=12.5,
        description="Welcome",
        min_purchase="50",
        starts_at=iso(starts),
        expires_at=iso(ends),
        usage_limit=100,
        per_user_limit=1,
        is_public=True,
    )
    assert set(created) == FULL_FIELDS
    assert {k: created[k] for k in ("code", "type", "value", "min_purchase", "currency", "used_count")} == {
        "code": "WELCOME10",
        "type": "percentage",
        "value": "12.50",
        "min_purchase": "50.00",
        "currency": "USD",
        "used_count": 0,
    }
    assert (created["starts_at"], created["expires_at"], created["deleted_at"]) == (iso(starts), iso(ends), None)
    assert (created["usage_limit"], created["per_user_limit"], created["is_public"]) == (100, 1, True)
    coupon = await stored(services, "WELCOME10")
    assert (coupon.value, coupon.min_purchase, coupon.type) == (Decimal("12.50"), Decimal("50.00"), "percentage")

    public = await client.get(f"{C}/Welcome10")
    assert public.status_code == 200, public.text
    assert public.json() == {
        "code": "WELCOME10",
        "type": "percentage",
        "value": "12.50",
        "description": "Welcome",
        "min_purchase": "50.00",
        "currency": "USD",
        "starts_at": iso(starts),
        "expires_at": iso(ends),
    }
    as_customer = await client.get(f"{C}/welcome10", headers=bearer(customer))
    assert set(as_customer.json()) == PUBLIC_FIELDS
    as_admin = await client.get(f"{C}/welcome10", headers=admin)
    assert as_admin.json() == created
    assert (await client.get(f"{C}/NOPE")).status_code == 404


async def test_fixed_coupon_and_defaults(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    created = await create(client, admin, code="FIVE-OFF", type="fixed", value="5")
    assert (created["type"], created["value"], created["is_public"]) == ("fixed", "5.00", False)
    assert created["min_purchase"] is None and created["usage_limit"] is None and created["expires_at"] is None


async def test_duplicate_code_is_409_case_insensitive(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    await create(client, admin, code="SAME")
    response = await client.post(C, json={"code": "same", "type": "fixed", "value": "1"}, headers=admin)
    assert response.status_code == 409, response.text
    assert response.json()["type"].endswith("/conflict")
    assert await coupon_count(services) == 1
    assert (await stored(services, "SAME")).type == "percentage"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"value": "100.01"}, "value"),
        ({"value": "0"}, "value"),
        ({"value": "-5"}, "value"),
        ({"type": "fixed", "value": "0"}, "value"),
        ({"type": "fixed", "value": "1.005"}, "value"),
        ({"value": "abc"}, "value"),
        ({"type": "bogus"}, "type"),
        ({"min_purchase": "-1"}, "min_purchase"),
        ({"min_purchase": "10.001"}, "min_purchase"),
        ({"starts_at": "2030-01-02T00:00:00Z", "expires_at": "2030-01-01T00:00:00Z"}, "expires_at"),
        ({"starts_at": "2030-01-01T00:00:00Z", "expires_at": "2030-01-01T00:00:00Z"}, "expires_at"),
        ({"starts_at": "2030-01-01T00:00:00"}, "starts_at"),
        ({"expires_at": "9999-12-31T23:59:59-05:00"}, "expires_at"),  # past year 9999 in UTC
        ({"starts_at": "0001-01-01T00:00:00+01:00"}, "starts_at"),  # before year 1 in UTC
        ({"usage_limit": 0}, "usage_limit"),
        ({"per_user_limit": -1}, "per_user_limit"),
        ({"code": "has space"}, "code"),
        ({"code": "AB"}, "code"),
        ({"used_count": 3}, "used_count"),
    ],
)
async def test_bad_coupon_is_422_naming_the_field_and_writes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services, change: dict[str, Any], field: str
) -> None:
    body = {"code": "BAD1", "type": "percentage", "value": "10", **change}
    response = await client.post(C, json=body, headers=admin)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("/validation-error")
    assert any(error["loc"][:2] == ["body", field] for error in problem["errors"]), problem
    assert await coupon_count(services) == 0


async def test_customers_and_anonymous_cannot_manage_coupons(
    client: httpx.AsyncClient, admin: dict[str, str], customer: dict[str, Any], services: Services
) -> None:
    await create(client, admin, code="KEEP", value="10")
    attempts = [
        ("POST", C, {"code": "MINE", "type": "fixed", "value": "5"}),
        ("POST", f"{C}/bulk", {"prefix": "X", "count": 2, "type": "fixed", "value": "5"}),
        ("PATCH", f"{C}/KEEP", {"value": "90"}),
        ("PUT", f"{C}/KEEP", {"value": "90"}),
        ("DELETE", f"{C}/KEEP", None),
    ]
    for method, url, body in attempts:
        refused = await client.request(method, url, json=body, headers=bearer(customer))
        assert refused.status_code == 403, (method, url, refused.text)
        assert refused.json()["type"].endswith("/forbidden")
        anonymous = await client.request(method, url, json=body)
        assert anonymous.status_code == 401, (method, url, anonymous.text)
    assert await coupon_count(services) == 1
    kept = await stored(services, "KEEP")
    assert (kept.value, kept.deleted_at) == (Decimal("10.00"), None)
    filtered = await client.get(C, params={"status": "deleted"}, headers=bearer(customer))
    assert filtered.status_code == 403


async def test_partial_update_and_put_alias(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    created = await create(
        client, admin, code="EDIT", value="10", expires_at="2099-01-01T00:00:00Z", description="Old", usage_limit=9
    )
    patched = await client.patch(f"{C}/edit", json={"value": "15", "expires_at": None}, headers=admin)
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["value"], body["expires_at"], body["description"], body["usage_limit"]) == ("15.00", None, "Old", 9)
    assert body["created_at"] == created["created_at"]
    put = await client.put(f"{C}/EDIT", json={"type": "fixed", "value": "250", "is_public": True}, headers=admin)
    assert put.status_code == 200, put.text
    assert (put.json()["type"], put.json()["value"], put.json()["is_public"]) == ("fixed", "250.00", True)
    coupon = await stored(services, "EDIT")
    assert (coupon.type, coupon.value, coupon.expires_at, coupon.is_public) == ("fixed", Decimal("250.00"), None, True)
    assert (await client.patch(f"{C}/NOPE", json={"value": "1"}, headers=admin)).status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "percentage"}, "value"),  # 250 % is not a percentage
        ({"value": None}, "value"),
        ({"type": None}, "type"),
        ({"is_public": None}, "is_public"),
        ({"starts_at": "2098-01-01T00:00:00Z", "expires_at": "2097-01-01T00:00:00Z"}, "expires_at"),
        ({"usage_limit": 1}, "usage_limit"),  # 2 uses already counted
        ({"code": "RENAMED"}, "code"),
        ({"used_count": 0}, "used_count"),
        ({"expires_at": "9999-12-31T23:59:59-05:00"}, "expires_at"),
    ],
)
async def test_bad_update_is_422_and_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services, change: dict[str, Any], field: str
) -> None:
    await create(client, admin, code="FIXED", type="fixed", value="250", expires_at="2099-01-01T00:00:00Z")
    await redeem_once(services, "FIXED")
    await redeem_once(services, "FIXED")
    before = (await client.get(f"{C}/FIXED", headers=admin)).json()
    response = await client.patch(f"{C}/FIXED", json=change, headers=admin)
    assert response.status_code == 422, response.text
    assert any(error["loc"][:2] == ["body", field] for error in response.json()["errors"]), response.json()
    assert (await client.get(f"{C}/FIXED", headers=admin)).json() == before
    assert before["used_count"] == 2


async def test_soft_delete(client: httpx.AsyncClient, admin: dict[str, str], services: Services) -> None:
    await create(client, admin, code="GONE", is_public=True)
    await create(client, admin, code="STAYS", is_public=True)
    deleted = await client.delete(f"{C}/gone", headers=admin)
    assert deleted.status_code == 204 and deleted.content == b""
    coupon = await stored(services, "GONE")
    assert coupon.deleted_at is not None
    assert (await client.get(f"{C}/GONE")).status_code == 404
    assert (await client.get(f"{C}/GONE", headers=admin)).status_code == 404
    assert (await client.delete(f"{C}/GONE", headers=admin)).status_code == 404
    assert (await client.patch(f"{C}/GONE", json={"value": "5"}, headers=admin)).status_code == 404
    assert [c["code"] for c in (await client.get(C)).json()["data"]] == ["STAYS"]
    assert [c["code"] for c in (await client.get(C, headers=admin)).json()["data"]] == ["STAYS"]
    listed = (await client.get(C, params={"status": "deleted"}, headers=admin)).json()["data"]
    assert [(c["code"], c["deleted_at"] is not None) for c in listed] == [("GONE", True)]
    validation = await client.post(f"{C}/GONE/validate", json={"subtotal": "10"})
    assert validation.json()["reason"] == "not_found"
    again = await client.post(C, json={"code": "gone", "type": "fixed", "value": "1"}, headers=admin)
    assert again.status_code == 409
    assert await coupon_count(services) == 2


# --- bulk ------------------------------------------------------------------------------------------------------


async def test_bulk_generates_unique_codes(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    response = await client.post(
        f"{C}/bulk",
        json={"prefix": "xmas", "count": 300, "type": "fixed", "value": "5", "usage_limit": 1, "is_public": False},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    codes = body["codes"]
    assert body["count"] == 300 and len(codes) == 300 and len(set(codes)) == 300
    pattern = re.compile(r"^XMAS-[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}-[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}$")
    assert all(pattern.match(code) for code in codes), codes[:5]
    assert await coupon_count(services) == 300
    async with services.db.session(write=False) as session:
        rows = (await session.execute(select(Coupon.code, Coupon.value, Coupon.usage_limit, Coupon.type))).all()
    assert {row.code for row in rows} == set(codes)
    assert {(row.value, row.usage_limit, row.type) for row in rows} == {(Decimal("5.00"), 1, "fixed")}
    one = await client.get(f"{C}/{codes[0].lower()}", headers=admin)
    assert one.status_code == 200 and one.json()["code"] == codes[0]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"count": 0}, "count"),
        ({"count": 1001}, "count"),
        ({"prefix": "bad prefix"}, "prefix"),
        ({"prefix": "P" * 41}, "prefix"),
        ({"value": "101"}, "value"),
        ({"code": "ONE"}, "code"),
    ],
)
async def test_bad_bulk_is_422_and_writes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services, change: dict[str, Any], field: str
) -> None:
    body = {"prefix": "B", "count": 3, "type": "percentage", "value": "10", **change}
    response = await client.post(f"{C}/bulk", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert any(error["loc"][:2] == ["body", field] for error in response.json()["errors"]), response.json()
    assert await coupon_count(services) == 0


# --- listing ---------------------------------------------------------------------------------------------------


async def test_public_list_shows_usable_public_coupons_admin_list_filters(
    client: httpx.AsyncClient, admin: dict[str, str], customer: dict[str, Any], services: Services
) -> None:
    past, future = "2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z"
    await create(client, admin, code="LIVE", is_public=True, starts_at=past, expires_at=future)
    await create(client, admin, code="SECRET", is_public=False)
    await create(client, admin, code="OLD", is_public=True, expires_at=past)
    await create(client, admin, code="SOON", is_public=True, starts_at=future)
    await create(client, admin, code="USEDUP", is_public=True, usage_limit=1)
    await redeem_once(services, "USEDUP")

    public = await client.get(C)
    assert public.status_code == 200
    assert public.json()["pagination"] == {"page": 1, "limit": 20, "total": 1, "total_pages": 1}
    assert [set(c) for c in public.json()["data"]] == [PUBLIC_FIELDS]
    assert [c["code"] for c in public.json()["data"]] == ["LIVE"]
    signed_in = await client.get(C, headers=bearer(customer))
    assert [c["code"] for c in signed_in.json()["data"]] == ["LIVE"]
    assert (await client.get(C, params={"is_public": "true"})).status_code == 403

    everything = await client.get(C, headers=admin)
    assert {c["code"] for c in everything.json()["data"]} == {"LIVE", "SECRET", "OLD", "SOON", "USEDUP"}
    assert all(set(c) == FULL_FIELDS for c in everything.json()["data"])

    async def codes(**params: Any) -> set[str]:
        response = await client.get(C, params=params, headers=admin)
        assert response.status_code == 200, response.text
        return {c["code"] for c in response.json()["data"]}

    assert await codes(status="active") == {"LIVE", "SECRET"}
    assert await codes(status="expired") == {"OLD"}
    assert await codes(status="scheduled") == {"SOON"}
    assert await codes(status="exhausted") == {"USEDUP"}
    assert await codes(is_public="false") == {"SECRET"}
    assert await codes(q="sec") == {"SECRET"}
    assert await codes(q="%") == set()
    assert await codes(status="active", is_public="true") == {"LIVE"}

    first = await client.get(C, params={"limit": 2}, headers=admin)
    assert first.json()["pagination"] == {"page": 1, "limit": 2, "total": 5, "total_pages": 3}
    assert 'rel="next"' in first.headers["link"]
    assert (await client.get(C, params={"limit": 101}, headers=admin)).status_code == 422
    assert (await client.get(C, params={"status": "bogus"}, headers=admin)).status_code == 422


# --- validate and check ----------------------------------------------------------------------------------------


async def test_validate_computes_the_discount(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(client, admin, code="TEN", value="10", min_purchase="50")
    await create(client, admin, code="TWENTYFIVE", type="fixed", value="25")
    await create(client, admin, code="EIGHTH", value="12.5")

    ok = await client.post(f"{C}/ten/validate", json={"subtotal": 60})
    assert ok.status_code == 200, ok.text
    assert ok.json() == {
        "valid": True,
        "code": "TEN",
        "subtotal": "60.00",
        "discount": "6.00",
        "currency": "USD",
        "reason": None,
        "detail": None,
    }
    capped = (await client.post(f"{C}/TWENTYFIVE/validate", json={"subtotal": "20.00"})).json()
    assert (capped["valid"], capped["discount"]) == (True, "20.00")
    # 12.5 % of 0.20 = 0.025 → half-even 0.02; of 0.60 = 0.075 → 0.08
    assert (await client.post(f"{C}/EIGHTH/validate", json={"subtotal": "0.20"})).json()["discount"] == "0.02"
    assert (await client.post(f"{C}/EIGHTH/validate", json={"subtotal": "0.60"})).json()["discount"] == "0.08"

    for bad in ("-1", "1.001", "x"):
        refused = await client.post(f"{C}/TEN/validate", json={"subtotal": bad})
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["loc"][:2] == ["body", "subtotal"]
    assert (await client.post(f"{C}/TEN/validate", json={"subtotal": "1", "extra": 1})).status_code == 422


async def make_reason_coupons(client: httpx.AsyncClient, admin: dict[str, str], services: Services) -> None:
    await create(client, admin, code="NOTYET", starts_at="2099-01-01T00:00:00Z")
    await create(client, admin, code="OVER", starts_at="2020-01-01T00:00:00Z", expires_at="2021-01-01T00:00:00Z")
    await create(client, admin, code="EMPTY", usage_limit=1)
    await create(client, admin, code="ONCE", per_user_limit=1)
    await create(client, admin, code="MIN", min_purchase="50")
    await create(client, admin, code="REMOVED")
    assert (await client.delete(f"{C}/REMOVED", headers=admin)).status_code == 204
    await redeem_once(services, "EMPTY")


REASON_CASES = [
    ("NOPE", "not_found"),
    ("removed", "not_found"),
    ("notyet", "not_started"),
    ("Over", "expired"),
    ("empty", "exhausted"),
    ("once", "per_user_exhausted"),
    ("min", "below_minimum"),
]


async def test_validate_reports_each_reason(
    client: httpx.AsyncClient, admin: dict[str, str], customer: dict[str, Any], services: Services
) -> None:
    await make_reason_coupons(client, admin, services)
    user_id = uuid.UUID(customer["user"]["id"])
    await redeem_once(services, "ONCE", user_id=user_id)
    for code, reason in REASON_CASES:
        response = await client.post(f"{C}/{code}/validate", json={"subtotal": "49.99"}, headers=bearer(customer))
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["valid"], body["reason"], body["discount"], body["code"]) == (False, reason, "0.00", code.upper())
        assert body["detail"]
    # the per-customer limit is the customer's: someone else (or a guest) may still use it
    assert (await client.post(f"{C}/ONCE/validate", json={"subtotal": "10"})).json()["valid"] is True
    other = await register(client)
    client.cookies.clear()
    mine = await client.post(f"{C}/ONCE/validate", json={"subtotal": "10"}, headers=bearer(other))
    assert mine.json()["valid"] is True
    # a use as a guest under the account's email is the same customer's: checkout would refuse, so validate does
    await redeem_once(services, "ONCE", email=other["user"]["email"].upper())
    mine = await client.post(f"{C}/ONCE/validate", json={"subtotal": "10"}, headers=bearer(other))
    assert (mine.json()["valid"], mine.json()["reason"]) == (False, "per_user_exhausted")
    assert (await client.post(f"{C}/MIN/validate", json={"subtotal": "50"})).json()["valid"] is True


async def test_check_raises_each_reason(client: httpx.AsyncClient, admin: dict[str, str], services: Services) -> None:
    await make_reason_coupons(client, admin, services)
    user_id = clock.new_id()
    await redeem_once(services, "ONCE", user_id=user_id)
    await create(client, admin, code="GUESTS", per_user_limit=1)
    await redeem_once(services, "GUESTS", email="Guest@Example.com")
    cases = [(code, reason, {"user_id": user_id, "email": None}) for code, reason in REASON_CASES]
    cases.append(("guests", "per_user_exhausted", {"user_id": None, "email": "guest@example.COM"}))
    async with services.db.session(write=False) as session:
        for code, reason, who in cases:
            with pytest.raises(CouponInvalid) as raised:
                await promotions.check(session, code, subtotal=Decimal("49.99"), now=clock.now(), **who)
            assert raised.value.reason == reason, code
            assert raised.value.extra == {"reason": reason}
            assert (raised.value.status, raised.value.code) == (422, "coupon-invalid")
        usable = await promotions.check(
            session, " min ", subtotal=Decimal("50.00"), user_id=user_id, email=None, now=clock.now()
        )
        assert usable.code == "MIN"
        other_guest = await promotions.check(
            session, "GUESTS", subtotal=Decimal("1"), user_id=None, email="other@example.com", now=clock.now()
        )
        assert other_guest.code == "GUESTS"
        # the window: starts_at is inclusive, expires_at exclusive
        starts = datetime(2099, 1, 1, tzinfo=UTC)
        assert await promotions.check(session, "NOTYET", subtotal=Decimal(1), user_id=None, email=None, now=starts)
        with pytest.raises(CouponInvalid):
            await promotions.check(
                session, "NOTYET", subtotal=Decimal(1), user_id=None, email=None, now=starts - timedelta(microseconds=1)
            )
        ends = datetime(2021, 1, 1, tzinfo=UTC)
        assert await promotions.check(
            session, "OVER", subtotal=Decimal(1), user_id=None, email=None, now=ends - timedelta(microseconds=1)
        )


async def test_discount_of_gives_the_pricing_terms(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    await create(client, admin, code="PCT", value="12.5")
    await create(client, admin, code="AMT", type="fixed", value="7")
    async with services.db.session(write=False) as session:
        pct = await promotions.check(session, "pct", subtotal=Decimal(1), user_id=None, email=None, now=clock.now())
        amt = await promotions.check(session, "amt", subtotal=Decimal(1), user_id=None, email=None, now=clock.now())
    assert promotions.discount_of(pct) == Discount("percentage", Decimal("12.50"))
    assert promotions.discount_of(amt) == Discount("fixed", Decimal("7.00"))


# --- redeem and release under concurrency ----------------------------------------------------------------------


async def concurrent_redeems(services: Services, code: str, n: int, **who: Any) -> tuple[list[Coupon], list[str]]:
    async def attempt() -> Coupon | str:
        try:
            return await redeem_once(services, code, **who)
        except CouponInvalid as exc:
            return exc.reason

    results = await asyncio.gather(*(attempt() for _ in range(n)))
    return [r for r in results if isinstance(r, Coupon)], [r for r in results if isinstance(r, str)]


async def redemptions(services: Services, code: str) -> list[CouponRedemption]:
    async with services.db.session(write=False) as session:
        query = (
            select(CouponRedemption).join(Coupon, Coupon.id == CouponRedemption.coupon_id).where(Coupon.code == code)
        )
        return list((await session.execute(query)).scalars())


async def test_twenty_concurrent_redeems_of_a_coupon_limited_to_five(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    await create(client, admin, code="FIVE", type="fixed", value="1", usage_limit=5)
    won, refused = await concurrent_redeems(services, "five", 20)
    assert len(won) == 5
    assert refused == ["exhausted"] * 15
    assert (await stored(services, "FIVE")).used_count == 5
    rows = await redemptions(services, "FIVE")
    assert len(rows) == 5 and len({row.order_id for row in rows}) == 5

    order_id = rows[0].order_id
    async with services.db.session(write=True) as session:
        await promotions.release(session, order_id=order_id, now=clock.now())
    assert (await stored(services, "FIVE")).used_count == 4
    async with services.db.session(write=True) as session:  # idempotent
        await promotions.release(session, order_id=order_id, now=clock.now())
        await promotions.release(session, order_id=clock.new_id(), now=clock.now())
    assert (await stored(services, "FIVE")).used_count == 4
    released = [row for row in await redemptions(services, "FIVE") if row.released_at is not None]
    assert [row.order_id for row in released] == [order_id]

    won, refused = await concurrent_redeems(services, "FIVE", 3)
    assert (len(won), refused) == (1, ["exhausted", "exhausted"])
    assert (await stored(services, "FIVE")).used_count == 5


async def test_per_user_limit_holds_under_concurrency(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    await create(client, admin, code="ONEEACH", per_user_limit=1)
    user_id = clock.new_id()
    won, refused = await concurrent_redeems(services, "ONEEACH", 5, user_id=user_id)
    assert len(won) == 1
    assert refused == ["per_user_exhausted"] * 4
    won, refused = await concurrent_redeems(services, "ONEEACH", 5, email="Guest@example.com")
    assert (len(won), refused) == (1, ["per_user_exhausted"] * 4)
    assert (await stored(services, "ONEEACH")).used_count == 2
    rows = await redemptions(services, "ONEEACH")
    assert sorted((str(row.user_id), row.email) for row in rows) == sorted(
        [(str(user_id), None), ("None", "guest@example.com")]
    )
    # a released use may be used again
    async with services.db.session(write=True) as session:
        await promotions.release(session, order_id=next(r.order_id for r in rows if r.user_id), now=clock.now())
    won, refused = await concurrent_redeems(services, "ONEEACH", 3, user_id=user_id)
    assert (len(won), len(refused)) == (1, 2)


async def test_release_gives_back_the_use_of_a_deleted_coupon(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    await create(client, admin, code="BYE", usage_limit=3)
    async with services.db.session(write=True) as session:
        order_id = clock.new_id()
        coupon = await promotions.redeem(
            session, "BYE", order_id=order_id, user_id=None, email=None, subtotal=Decimal(5), now=clock.now()
        )
        assert coupon.used_count == 1
    assert (await client.delete(f"{C}/BYE", headers=admin)).status_code == 204
    with pytest.raises(CouponInvalid) as raised:
        await redeem_once(services, "BYE")
    assert raised.value.reason == "not_found"
    async with services.db.session(write=True) as session:
        await promotions.release(session, order_id=order_id, now=clock.now())
    assert (await stored(services, "BYE")).used_count == 0


async def test_validate_without_subtotal_uses_the_callers_cart(
    client: httpx.AsyncClient, admin: dict[str, str], customer: dict[str, Any], services: Services
) -> None:
    product = await client.post(
        "/api/v1/products", json={"name": "Mug", "price": "30.00", "status": "active", "stock": 10}, headers=admin
    )
    assert product.status_code == 201, product.text
    await create(client, admin, code="TEN", value="10", min_purchase="50")
    item = {"product_id": product.json()["id"], "quantity": 2}

    empty = await client.post(f"{C}/TEN/validate", headers=bearer(customer))
    assert empty.status_code == 200, empty.text
    assert (empty.json()["valid"], empty.json()["subtotal"], empty.json()["reason"]) == (
        False,
        "0.00",
        "below_minimum",
    )
    assert (await client.post("/api/v1/cart/items", json=item, headers=bearer(customer))).status_code == 201
    for body in (None, {}, {"subtotal": None}):
        mine = await client.post(f"{C}/ten/validate", json=body, headers=bearer(customer))
        assert mine.status_code == 200, mine.text
        assert (mine.json()["valid"], mine.json()["subtotal"], mine.json()["discount"]) == (True, "60.00", "6.00")
    explicit = await client.post(f"{C}/TEN/validate", json={"subtotal": "40"}, headers=bearer(customer))
    assert (explicit.json()["valid"], explicit.json()["reason"]) == (False, "below_minimum")

    # a guest's cart, by its cookie; validating creates no cart
    async with services.db.session(write=False) as session:
        carts_before = int(await session.scalar(select(func.count()).select_from(Cart)) or 0)
    anonymous = await client.post(f"{C}/TEN/validate")
    assert (anonymous.json()["subtotal"], anonymous.json()["valid"]) == ("0.00", False)
    async with services.db.session(write=False) as session:
        assert int(await session.scalar(select(func.count()).select_from(Cart)) or 0) == carts_before == 1
    assert (await client.post("/api/v1/cart/items", json={**item, "quantity": 3})).status_code == 201
    assert client.cookies.get("mercato_cart")
    guest = await client.post(f"{C}/TEN/validate")
    assert (guest.json()["valid"], guest.json()["subtotal"], guest.json()["discount"]) == (True, "90.00", "9.00")


async def test_per_customer_limit_counts_a_guest_use_under_the_same_email(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """A coupon limited to one use per customer, used as a guest with an email, is used up for the account that
    later signs in with that email (and the other way round)."""
    await create(client, admin, code="ONCE", per_user_limit=1)
    account = await register(client, "shopper@example.com")
    user_id = uuid.UUID(account["user"]["id"])
    await redeem_once(services, "ONCE", email="Shopper@Example.com")
    with pytest.raises(CouponInvalid) as raised:
        await redeem_once(services, "ONCE", user_id=user_id, email="shopper@example.com")
    assert raised.value.reason == "per_user_exhausted"
    await create(client, admin, code="TWICE", per_user_limit=1)
    await redeem_once(services, "TWICE", user_id=user_id, email="shopper@example.com")
    with pytest.raises(CouponInvalid):
        await redeem_once(services, "TWICE", email="SHOPPER@example.com")
    assert (await stored(services, "ONCE")).used_count == 1 and (await stored(services, "TWICE")).used_count == 1
