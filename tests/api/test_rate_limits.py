"""Rate limits of API.md §1, against the in-memory store (SQLite run) and Redis (PostgreSQL + Redis run)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from mercato.identity.models import AuthSession, User
from mercato.platform.context import Services
from mercato.web.ratelimit import RateLimiter
from tests.conftest import STRONG_PASSWORD, bearer, make_admin, register

SMALL = {
    "rate_limit_login_account": "3/15 minutes",
    "rate_limit_login_ip": "5/15 minutes",
    "rate_limit_register": "4/minute",
    "rate_limit_password_reset": "2/minute",
    "rate_limit_default": "6/minute",
}


RATE_HEADERS = ("ratelimit-policy", "ratelimit", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


@pytest.fixture
async def small_limits(services: Services) -> AsyncIterator[RateLimiter]:
    async for limiter in _limits(services, SMALL):
        yield limiter


@pytest.fixture
async def roomy_limits(services: Services) -> AsyncIterator[RateLimiter]:
    """Limits on, with room for a few dozen requests a minute."""
    async for limiter in _limits(services, {"rate_limit_default": "60/minute"}):
        yield limiter


async def _limits(services: Services, update: dict[str, str]) -> AsyncIterator[RateLimiter]:
    original = services.limiter
    settings = services.settings.model_copy(update=update)
    limiter = RateLimiter(settings, prefix=services.cache.prefix + "small:")
    await limiter.reset()
    services.limiter = limiter
    try:
        yield limiter
    finally:
        await limiter.reset()
        await limiter.close()
        services.limiter = original


async def test_storage_matches_backend(small_limits: RateLimiter, services: Services) -> None:
    kind = type(small_limits.storage).__name__
    assert kind == ("RedisStorage" if services.settings.redis_url else "MemoryStorage")


async def test_failed_logins_per_account_are_throttled(
    client: httpx.AsyncClient, small_limits: RateLimiter, services: Services
) -> None:
    await register(client, "target@example.com")
    for _ in range(3):
        bad = await client.post("/api/v1/auth/login", json={"email": "target@example.com", "password": "wrong-pass-1"})
        assert bad.status_code == 401
    sessions_before = await _sessions(services)
    blocked = await client.post("/api/v1/auth/login", json={"email": "TARGET@example.com", "password": STRONG_PASSWORD})
    assert blocked.status_code == 429
    assert blocked.headers["content-type"] == "application/problem+json"
    assert blocked.json()["type"].endswith("/rate-limited")
    assert 0 < int(blocked.headers["retry-after"]) <= 15 * 60
    assert await _sessions(services) == sessions_before
    # an email with no account is throttled the same way (no enumeration)
    for _ in range(3):
        await client.post("/api/v1/auth/login", json={"email": "ghost@example.com", "password": "wrong-pass-1"})
    ghost = await client.post("/api/v1/auth/login", json={"email": "ghost@example.com", "password": "wrong-pass-1"})
    assert ghost.status_code == 429


async def test_wrong_current_passwords_count_against_the_login_limit(
    client: httpx.AsyncClient, small_limits: RateLimiter
) -> None:
    """A stolen session cannot guess the password through change-password or change-email faster than through
    login: their wrong passwords use up the same per-account limit (3 here)."""
    me = await register(client, "held@example.com")
    headers = bearer(me)
    change = {"current_password": "wrong-pass-1", "new_password": "another-horse-battery-43"}
    assert (await client.post("/api/v1/auth/change-password", json=change, headers=headers)).status_code == 401
    email = {"password": "wrong-pass-1", "new_email": "elsewhere@example.com"}
    assert (await client.post("/api/v1/auth/change-email", json=email, headers=headers)).status_code == 401
    wrong = {"email": "held@example.com", "password": "wrong-pass-1"}
    assert (await client.post("/api/v1/auth/login", json=wrong)).status_code == 401
    right = {**change, "current_password": STRONG_PASSWORD}
    refused = await client.post("/api/v1/auth/change-password", json=right, headers=headers)
    assert refused.status_code == 429 and refused.json()["type"].endswith("/rate-limited")
    login = await client.post("/api/v1/auth/login", json={"email": "held@example.com", "password": STRONG_PASSWORD})
    assert login.status_code == 429  # the password did not change either


async def test_concurrent_failed_logins_cannot_pass_the_account_limit(
    client: httpx.AsyncClient, services: Services
) -> None:
    """API.md §1: five failed logins per account in 15 minutes (the default). Twenty wrong passwords sent at once
    must not all be checked before any is counted: at most five get 401, the rest 429 — and the owner is
    throttled too afterwards, with no session opened."""
    await register(client, "victim@example.com")
    wrong = {"email": "victim@example.com", "password": "wrong-pass-1"}

    answers = await asyncio.gather(*(client.post("/api/v1/auth/login", json=wrong) for _ in range(20)))

    codes = sorted(answer.status_code for answer in answers)
    assert codes == [401] * 5 + [429] * 15, codes
    assert all(a.json()["type"].endswith("/rate-limited") for a in answers if a.status_code == 429)
    sessions_before = await _sessions(services)
    owner = await client.post("/api/v1/auth/login", json={"email": "victim@example.com", "password": STRONG_PASSWORD})
    assert owner.status_code == 429
    assert await _sessions(services) == sessions_before


async def test_a_successful_login_is_forgiven_but_earlier_failures_still_count(
    client: httpx.AsyncClient, small_limits: RateLimiter
) -> None:
    """Every attempt is counted before the password is checked; a right password takes its own count back (so
    signing in never uses up the limit), failures before it stay counted."""
    await register(client, "mixed@example.com")
    right = {"email": "mixed@example.com", "password": STRONG_PASSWORD}
    wrong = {"email": "mixed@example.com", "password": "wrong-pass-1"}
    for _ in range(2):
        assert (await client.post("/api/v1/auth/login", json=wrong)).status_code == 401
    for _ in range(3):
        assert (await client.post("/api/v1/auth/login", json=right)).status_code == 200

    assert (await client.post("/api/v1/auth/login", json=wrong)).status_code == 401  # the third failure
    assert (await client.post("/api/v1/auth/login", json=right)).status_code == 429


async def test_failed_logins_per_ip_are_throttled(client: httpx.AsyncClient, small_limits: RateLimiter) -> None:
    for i in range(5):
        response = await client.post(
            "/api/v1/auth/login", json={"email": f"u{i}@example.com", "password": "wrong-pass-1"}
        )
        assert response.status_code == 401
    blocked = await client.post("/api/v1/auth/login", json={"email": "fresh@example.com", "password": "wrong-pass-1"})
    assert blocked.status_code == 429


async def test_successful_logins_do_not_count(client: httpx.AsyncClient, small_limits: RateLimiter) -> None:
    await register(client, "fine@example.com")
    for _ in range(4):
        ok = await client.post("/api/v1/auth/login", json={"email": "fine@example.com", "password": STRONG_PASSWORD})
        assert ok.status_code == 200


async def test_registrations_per_ip(client: httpx.AsyncClient, small_limits: RateLimiter, services: Services) -> None:
    for i in range(4):
        await register(client, f"new{i}@example.com")
    blocked = await client.post(
        "/api/v1/auth/register", json={"email": "new9@example.com", "password": STRONG_PASSWORD}
    )
    assert blocked.status_code == 429
    async with services.db.session(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 4


async def test_password_reset_requests_per_ip(client: httpx.AsyncClient, small_limits: RateLimiter) -> None:
    for _ in range(2):
        assert (await client.post("/api/v1/auth/forgot-password", json={"email": "a@example.com"})).status_code == 202
    assert (await client.post("/api/v1/auth/forgot-password", json={"email": "a@example.com"})).status_code == 429


async def test_general_limit_and_headers(client: httpx.AsyncClient, small_limits: RateLimiter) -> None:
    first = await client.get("/api/v1/status")
    assert first.headers["ratelimit-policy"] == '"default";q=6;w=60'
    assert first.headers["ratelimit"].startswith('"default";r=5;t=')
    assert first.headers["x-ratelimit-limit"] == "6"
    assert first.headers["x-ratelimit-remaining"] == "5"
    assert 0 <= int(first.headers["x-ratelimit-reset"]) <= 60
    for _ in range(5):
        assert (await client.get("/api/v1/status")).status_code == 200
    blocked = await client.get("/api/v1/status")
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    assert (await client.get("/health")).status_code == 200  # outside /api/v1: never limited


async def test_catalog_reads_carry_the_rate_limit_headers(
    client: httpx.AsyncClient, services: Services, roomy_limits: RateLimiter
) -> None:
    """API.md §1: every response carries the rate-limit fields, catalog reads too (their routes build their own
    response for ETag/304), whether computed, replayed from the catalog cache or answered 304."""
    admin = bearer(await make_admin(services, client))
    client.cookies.clear()  # the reads below are anonymous: counted per IP
    body = {"name": "Xylophone", "price": "10.00", "status": "active", "stock": 3}
    created = await client.post("/api/v1/products", json=body, headers=admin)
    assert created.status_code == 201, created.text
    product_id = created.json()["id"]
    reference = await client.get("/api/v1/shipping/methods")
    assert reference.status_code == 200 and reference.headers["ratelimit-policy"] == '"default";q=60;w=60'
    remaining = int(reference.headers["x-ratelimit-remaining"])
    paths = ("/api/v1/products", f"/api/v1/products/{product_id}", "/api/v1/products/search?q=x", "/api/v1/catalog")

    for _ in range(2):  # computed, then replayed from the catalog cache
        for path in paths:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)
            assert [name for name in RATE_HEADERS if name not in response.headers] == [], path
            assert response.headers["ratelimit-policy"] == reference.headers["ratelimit-policy"], path
            remaining -= 1
            assert response.headers["x-ratelimit-remaining"] == str(remaining), path
            assert response.headers["ratelimit"].startswith(f'"default";r={remaining};t='), path

    etag = (await client.get(f"/api/v1/products/{product_id}")).headers["etag"]
    not_modified = await client.get(f"/api/v1/products/{product_id}", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.headers["x-ratelimit-remaining"] == str(remaining - 2)
    missing = await client.get(f"/api/v1/products/{uuid.uuid4()}")  # a problem response counts and says so
    assert missing.status_code == 404 and missing.headers["x-ratelimit-remaining"] == str(remaining - 3)
    signed_in = await client.get("/api/v1/products", headers=admin)  # not the anonymous replay
    assert signed_in.status_code == 200 and signed_in.headers["ratelimit-policy"] == '"default";q=60;w=60'
    assert int(signed_in.headers["x-ratelimit-remaining"]) < 60


async def test_trusted_proxy_forwarded_for(
    client: httpx.AsyncClient, small_limits: RateLimiter, services: Services
) -> None:
    # the ASGI test client connects from 127.0.0.1; untrusted, X-Forwarded-For is ignored
    for _ in range(6):
        await client.get("/api/v1/status", headers={"X-Forwarded-For": "203.0.113.9"})
    assert (await client.get("/api/v1/status", headers={"X-Forwarded-For": "203.0.113.10"})).status_code == 429
    services.settings.trusted_proxies = ["127.0.0.1"]
    try:
        other = await client.get("/api/v1/status", headers={"X-Forwarded-For": "203.0.113.10"})
        assert other.status_code == 200
        assert other.headers["x-ratelimit-remaining"] == "5"
    finally:
        services.settings.trusted_proxies = []


async def test_limits_can_be_switched_off(client: httpx.AsyncClient, services: Services) -> None:
    limiter = RateLimiter(services.settings.model_copy(update={**SMALL, "rate_limits": False}))
    original, services.limiter = services.limiter, limiter
    try:
        for _ in range(10):
            response = await client.get("/api/v1/status")
            assert response.status_code == 200
            assert "ratelimit" not in response.headers
    finally:
        services.limiter = original


async def _sessions(services: Services) -> int:
    async with services.db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(AuthSession)) or 0)
