"""The HTTP platform: problem+json for every error, request ids, security headers, size limits, health."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from mercato.app import create_app
from mercato.catalog.models import Product
from mercato.db.engine import after_commit
from mercato.inventory.models import InventoryItem
from mercato.platform.context import Services
from mercato.promotions.models import Coupon
from mercato.shipping.models import ShippingMethod
from mercato.web.deps import SessionDep
from tests.conftest import bearer, make_admin


async def test_health_is_static_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" not in response.headers
    assert len(response.headers["x-request-id"]) == 32


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    bad = await client.get("/health", headers={"X-Request-ID": "no spaces allowed\t"})
    assert bad.headers["x-request-id"] != "no spaces allowed\t"


async def test_ready_and_status(client: httpx.AsyncClient, services: Services) -> None:
    ready = await client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    status = await client.get("/api/v1/status")
    assert status.status_code == 200
    body = status.json()
    assert body["database"] == "ok"
    assert body["cache"] == ("ok" if services.settings.redis_url else "memory")
    assert body["queue"] == "ok"
    assert body["uptime_s"] >= 0
    assert set(body) >= {"version", "uptime_s", "database", "cache", "queue", "pending_requests"}


async def test_unknown_route_is_problem_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nope", headers={"X-Request-ID": "rid-1"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "https://mercato.dev/problems/not-found"
    assert body["status"] == 404
    assert body["instance"] == "/api/v1/nope"
    assert body["request_id"] == "rid-1"


async def test_wrong_method_is_problem_405(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/v1/auth/me")
    assert response.status_code == 405
    assert response.json()["type"].endswith("/method-not-allowed")


async def test_malformed_json_is_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/login",
        content=b'{"email": "a@b.c", "password": ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["type"].endswith("/validation-error")
    assert body["errors"][0]["type"] == "json_invalid"


async def test_oversized_body_is_413_before_reading(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/register",
        content=b"x" * (8 * 1024 * 1024 + 1),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["type"].endswith("/payload-too-large")


async def test_oversized_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(9):
            yield b"x" * (1024 * 1024)

    response = await client.post(
        "/api/v1/auth/register", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_a_failing_after_commit_callback_does_not_fail_a_committed_request(services: Services) -> None:
    """The change is committed before the callbacks run (cache invalidation, job wake-up): one that fails (Redis
    down, say) is logged, the ones after it still run, and the client gets its success, not a 500 it would
    retry."""
    app = create_app(services.settings, services=services)  # its own: the route below must not leak into others
    ran: list[str] = []

    async def broken() -> None:
        raise ConnectionError("redis is down")

    async def later() -> None:
        ran.append("later")

    @app.post("/commit-then-fail")
    async def commit_then_fail(session: SessionDep) -> dict[str, str]:
        session.add(ShippingMethod(name="Courier", carrier="ACME", base_rate=Decimal("5.00"), min_days=1, max_days=3))
        after_commit(session, broken)
        after_commit(session, later)
        return {"done": "yes"}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post("/commit-then-fail")
    assert response.status_code == 200, response.text
    assert ran == ["later"]
    async with services.db.session(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(ShippingMethod)) == 1


async def test_unhandled_error_is_500_without_trace(services: Services) -> None:
    app = create_app(services.settings, services=services)  # its own: the route below must not leak into others

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    body = response.json()
    assert body["type"].endswith("/internal-error")
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    assert body["request_id"] == response.headers["x-request-id"]


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/health")
    await client.get("/api/v1/products/no-such-product")
    response = await client.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert 'mercato_http_requests_total{method="GET",route="/health",status="200"}' in text
    assert 'route="/api/v1/products/{product_id}",status="404"}' in text
    assert "mercato_http_request_duration_seconds_bucket" in text
    assert "mercato_http_requests_in_flight" in text


async def test_openapi_documents_every_route(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), f"{method} {path} has no summary"
            assert operation.get("description"), f"{method} {path} has no description"
    assert "Problem" in schema["components"]["schemas"]


async def test_openapi_request_bodies_have_examples(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    missing = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if content is None:
                continue
            ref = content["schema"].get("$ref") or next(
                (s["$ref"] for s in content["schema"].get("anyOf", []) if "$ref" in s), None
            )
            if ref is None or "examples" not in components[ref.rsplit("/", 1)[1]]:
                missing.append(f"{method.upper()} {path}")
    assert missing == []


def _component(schema: dict[str, Any]) -> str | None:
    """The component a JSON schema refers to (through anyOf/allOf or an array's items), if any."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[1]
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            if found := _component(option):
                return found
    return _component(schema["items"]) if schema.get("type") == "array" else None


async def test_openapi_success_responses_have_examples(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    missing = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for code, response in operation.get("responses", {}).items():
                content = response.get("content", {}).get("application/json")
                if not code.startswith("2") or content is None or (name := _component(content["schema"])) is None:
                    continue
                if name.startswith("Page_"):  # the envelope: its items carry the example
                    name = _component(components[name]["properties"]["data"]) or name
                if "examples" not in components[name] and "example" not in components[name]:
                    missing.append(f"{method.upper()} {path} {code} {name}")
    assert missing == []


async def test_nul_characters_are_422_naming_the_field_and_change_nothing(
    client: httpx.AsyncClient, services: Services
) -> None:
    """PostgreSQL cannot store NUL (``\\x00``) in text: any request string carrying one is a 422 that names the body
    field, query parameter or path parameter (never a 500), on both databases, and nothing is written."""
    admin = bearer(await make_admin(services, client))
    product = await client.post(
        "/api/v1/products", json={"name": "Mug", "price": "10.00", "status": "active", "stock": 5}, headers=admin
    )
    assert product.status_code == 201, product.text
    product_id = product.json()["id"]
    method = {"name": "Post", "carrier": "Royal Mail", "base_rate": "3.00", "min_days": 1, "max_days": 3}
    cases: list[tuple[str, str, dict[str, Any], list[str | int]]] = [
        (
            "POST",
            "/api/v1/inventory/adjust",
            {"json": {"product_id": product_id, "delta": 1, "reason": "a\x00b"}},
            ["body", "reason"],
        ),
        (
            "POST",
            "/api/v1/coupons",
            {"json": {"code": "NUL1", "type": "percentage", "value": "10", "description": "ten\x00"}},
            ["body", "description"],
        ),
        ("POST", "/api/v1/shipping/methods", {"json": {**method, "name": "Post\x00"}}, ["body", "name"]),
        (
            "POST",
            "/api/v1/products",
            {"json": {"name": "Tee", "price": "5.00", "specifications": {"fit": "slim\x00"}}},
            ["body", "specifications"],
        ),
        (
            "POST",
            "/api/v1/products",
            {"json": {"name": "Tee", "price": "5.00", "variants": [{"sku": "TEE-S", "name": "S\x00", "stock": 1}]}},
            ["body", "variants", 0, "name"],
        ),
        ("GET", "/api/v1/inventory", {"params": {"sku": "MUG\x00"}}, ["query", "sku"]),
        ("GET", "/api/v1/inventory/history", {"params": {"reference": "ORD\x00"}}, ["query", "reference"]),
        ("GET", "/api/v1/coupons/AB%00CD", {}, ["path", "code"]),
    ]
    for method_name, path, kwargs, loc in cases:
        response = await client.request(method_name, path, headers=admin, **kwargs)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["type"] == "https://mercato.dev/problems/validation-error"
        assert [error["loc"] for error in body["errors"]] == [loc], (path, body)
    async with services.db.session(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(Coupon)) == 0
        assert await session.scalar(select(func.count()).select_from(ShippingMethod)) == 0
        assert await session.scalar(select(func.count()).select_from(Product)) == 1
        assert await session.scalar(select(InventoryItem.on_hand)) == 5


async def test_nan_and_infinity_in_a_body_are_422_naming_the_field_and_change_nothing(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Python's JSON parser reads ``NaN`` and ``Infinity``, which are no JSON numbers (RFC 8259): stored in a JSON
    column they break every listing page of the product on SQLite (its JSON functions refuse them) and the write
    itself on PostgreSQL. A body holding one, at any depth, is a 422 naming the field, and nothing is written."""
    admin = bearer(await make_admin(services, client))
    cases = [
        (b'{"name": "Tee", "price": "5.00", "specifications": {"fit": NaN}}', ["body", "specifications"]),
        (b'{"name": "Tee", "price": "5.00", "attributes": {"sizes": [1, Infinity]}}', ["body", "attributes"]),
        (b'{"name": "Tee", "price": "5.00", "specifications": {"depth": -Infinity}}', ["body", "specifications"]),
    ]
    for content, loc in cases:
        response = await client.post(
            "/api/v1/products", content=content, headers={**admin, "Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert [error["loc"] for error in response.json()["errors"]] == [loc]
    async with services.db.session(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(Product)) == 0
    listed = await client.get("/api/v1/products")
    assert listed.status_code == 200 and listed.json()["data"] == []


@pytest.mark.backends("postgres")
async def test_postgresql_deadlock_and_serialization_failure_are_retryable_503(services: Services) -> None:
    """A transaction PostgreSQL rolls back for a concurrent one (a deadlock it detected, a serialization failure)
    is a 503 ``service-unavailable`` with ``Retry-After`` (the client retries), never a 500; other database
    errors stay 500s. PostgreSQL only: SQLite runs one writer at a time (its busy timeout is
    ``tests/integration/test_database_busy.py``)."""
    app = create_app(services.settings, services=services)  # its own: the routes below must not leak into others
    holding: list[int] = []
    both_hold = asyncio.Event()

    @app.post("/lock/{first}/{second}")
    async def lock_two(first: int, second: int, session: SessionDep) -> dict[str, str]:
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": first})
        holding.append(first)
        if len(holding) == 2:
            both_hold.set()
        await asyncio.wait_for(both_hold.wait(), 10)
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": second})
        return {"locked": "both"}

    @app.post("/raise/{sqlstate}")
    async def raise_sqlstate(sqlstate: str, session: SessionDep) -> None:
        assert sqlstate in {"40001", "23505"}
        await session.execute(text(f"DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '{sqlstate}'; END $$"))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    crossed = await asyncio.gather(client.post("/lock/1/2"), client.post("/lock/2/1"))
    assert sorted(response.status_code for response in crossed) == [200, 503]
    serialization = await client.post("/raise/40001")
    for refused in (*[r for r in crossed if r.status_code == 503], serialization):
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["type"] == "https://mercato.dev/problems/service-unavailable"
    other = await client.post("/raise/23505")
    await client.aclose()
    assert other.status_code == 500 and other.json()["type"].endswith("/internal-error")
