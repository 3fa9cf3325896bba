"""Registration, sign-in, token rotation, sign-out, sessions and the negative paths of API.md §2."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import jwt
import pytest
from sqlalchemy import func, select

from mercato.identity.models import AuthSession, RefreshToken, User
from mercato.platform.context import Services
from tests.conftest import STRONG_PASSWORD, bearer, login, register, sent_mail, token_from


async def count(services: Services, model: type) -> int:
    async with services.db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_register_creates_customer_signs_in_and_sends_verification(
    client: httpx.AsyncClient, services: Services
) -> None:
    response = await client.post(
        "/api/v1/auth/register",
        json={
            "email": "Ada@Example.com",
            "password": STRONG_PASSWORD,
            "first_name": "Ada",
            "last_name": "Lovelace",
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert body["user"]["email"] == "ada@example.com"
    assert body["user"]["role"] == "customer"
    assert body["user"]["email_verified"] is False
    assert body["user"]["first_name"] == "Ada"
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert "password" not in response.text and "hash" not in response.text
    cookies = response.headers.get_list("set-cookie")
    access = next(c for c in cookies if c.startswith("mercato_access="))
    refresh = next(c for c in cookies if c.startswith("mercato_refresh="))
    csrf = next(c for c in cookies if c.startswith("mercato_csrf="))
    assert "HttpOnly" in access and "samesite=lax" in access.lower()
    assert "HttpOnly" in refresh and "Path=/api/v1/auth" in refresh
    assert "HttpOnly" not in csrf
    me = await client.get("/api/v1/auth/me", headers=bearer(body))
    assert me.status_code == 200
    assert me.json()["id"] == body["user"]["id"]
    assert me.json() == body["user"]  # the cached snapshot shows exactly the User fields
    mails = await sent_mail(services, "ada@example.com")
    assert [m["Subject"] for m in mails] == ["Confirm your email address"]
    verified = await client.post("/api/v1/auth/verify-email", json={"token": token_from(mails[0])})
    assert verified.status_code == 200
    assert verified.json()["email_verified"] is True
    again = await client.post("/api/v1/auth/verify-email", json={"token": token_from(mails[0])})
    assert again.status_code == 401


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "x@example.com", "password": STRONG_PASSWORD, "role": "admin"},
        {"email": "not-an-email", "password": STRONG_PASSWORD},
        {"email": "x@example.com", "password": "short1"},
        {"email": "x@example.com", "password": "password123"},
        {"email": "x@example.com", "password": "a" * 129},
        {"email": "averylongname@example.com", "password": "averylongname@example.com"},
        {"email": "x@example.com"},
    ],
)
async def test_register_refuses_bad_input_and_writes_nothing(
    client: httpx.AsyncClient, services: Services, payload: dict
) -> None:
    response = await client.post("/api/v1/auth/register", json=payload)
    assert response.status_code == 422
    body = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert body["type"] == "https://mercato.dev/problems/validation-error"
    assert body["errors"] and all(e["loc"][0] == "body" for e in body["errors"])
    assert await count(services, User) == 0
    assert await sent_mail(services) == []


async def test_register_names_the_offending_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/register", json={"email": "x@example.com", "password": "password"})
    assert response.json()["errors"][0]["loc"] == ["body", "password"]
    unknown = await client.post(
        "/api/v1/auth/register", json={"email": "x@example.com", "password": STRONG_PASSWORD, "role": "admin"}
    )
    assert unknown.json()["errors"][0]["loc"] == ["body", "role"]


async def test_duplicate_email_any_case_is_409(client: httpx.AsyncClient, services: Services) -> None:
    await register(client, "dup@example.com")
    response = await client.post(
        "/api/v1/auth/register", json={"email": "DUP@example.COM", "password": STRONG_PASSWORD}
    )
    assert response.status_code == 409
    assert response.json()["type"].endswith("/conflict")
    assert await count(services, User) == 1


async def test_concurrent_registrations_of_one_email_are_one_201_and_one_409(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Both check the email before either inserts: on PostgreSQL the second insert meets the unique constraint,
    which is the same 409 as the check (it was a 500)."""

    async def sign_up(address: str) -> httpx.Response:
        return await client.post("/api/v1/auth/register", json={"email": address, "password": STRONG_PASSWORD})

    for attempt in range(3):
        address = f"twin-{attempt}@example.com"
        responses = await asyncio.gather(sign_up(address), sign_up(address))
        assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
        loser = next(r for r in responses if r.status_code == 409)
        assert loser.json()["type"] == "https://mercato.dev/problems/conflict"
        assert await count(services, User) == attempt + 1  # one account per email


async def test_login_wrong_email_and_wrong_password_look_the_same(
    client: httpx.AsyncClient, services: Services
) -> None:
    await register(client, "bob@example.com")
    sessions_before = await count(services, AuthSession)
    wrong_password = await client.post(
        "/api/v1/auth/login", json={"email": "bob@example.com", "password": "nope-nope-1"}
    )
    wrong_email = await client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": "nope-nope-1"}
    )
    assert wrong_password.status_code == wrong_email.status_code == 401
    assert wrong_password.json()["detail"] == wrong_email.json()["detail"]
    assert wrong_password.json()["title"] == wrong_email.json()["title"]
    assert await count(services, AuthSession) == sessions_before
    ok = await client.post("/api/v1/auth/login", json={"email": "BOB@example.com", "password": STRONG_PASSWORD})
    assert ok.status_code == 200
    assert ok.json()["user"]["email"] == "bob@example.com"


async def test_refresh_rotates_and_reuse_revokes_the_family(client: httpx.AsyncClient, services: Services) -> None:
    tokens = await register(client)
    first = await client.post("/api/v1/auth/refresh-token", json={"refresh_token": tokens["refresh_token"]})
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert (await client.get("/api/v1/auth/me", headers=bearer(rotated))).status_code == 200
    reuse = await client.post("/api/v1/auth/refresh-token", json={"refresh_token": tokens["refresh_token"]})
    assert reuse.status_code == 401
    # the whole family is dead: the newest refresh token and every access token of the session
    newest = await client.post("/api/v1/auth/refresh-token", json={"refresh_token": rotated["refresh_token"]})
    assert newest.status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=bearer(rotated))).status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=bearer(tokens))).status_code == 401
    async with services.db.session(write=False) as session:
        auth = (await session.execute(select(AuthSession))).scalar_one()
    assert auth.revoke_reason == "refresh_token_reuse"
    assert await count(services, RefreshToken) == 2


async def test_refresh_from_cookie_and_unknown_token(client: httpx.AsyncClient) -> None:
    await register(client)
    response = await client.post("/api/v1/auth/refresh-token")  # cookie jar carries mercato_refresh
    assert response.status_code == 200
    assert (await client.post("/api/v1/auth/refresh-token", json={"refresh_token": "made-up"})).status_code == 401


async def test_logout_revokes_at_once_and_clears_cookies(client: httpx.AsyncClient, services: Services) -> None:
    tokens = await register(client)
    assert (await client.get("/api/v1/auth/me", headers=bearer(tokens))).status_code == 200  # cache warmed
    response = await client.post("/api/v1/auth/logout", headers=bearer(tokens))
    assert response.status_code == 204
    assert any(
        c.startswith('mercato_access=""') or c.startswith("mercato_access=;")
        for c in response.headers.get_list("set-cookie")
    )
    assert (await client.get("/api/v1/auth/me", headers=bearer(tokens))).status_code == 401
    refresh = await client.post("/api/v1/auth/refresh-token", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401


async def test_sessions_list_and_revoke(client: httpx.AsyncClient) -> None:
    tokens = await register(client, "multi@example.com")
    other = await login(client, "multi@example.com")
    listed = await client.get("/api/v1/auth/sessions", headers=bearer(tokens))
    assert listed.status_code == 200
    data = listed.json()
    assert data["pagination"]["total"] == 2
    assert [s["current"] for s in data["data"]].count(True) == 1
    other_id = next(s["id"] for s in data["data"] if not s["current"])
    assert (await client.delete(f"/api/v1/auth/sessions/{other_id}", headers=bearer(tokens))).status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=bearer(other))).status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=bearer(tokens))).status_code == 200
    stranger = await register(client)
    gone = await client.delete(f"/api/v1/auth/sessions/{tokens['user']['id']}", headers=bearer(stranger))
    assert gone.status_code == 404


async def test_forgot_and_reset_password(client: httpx.AsyncClient, services: Services) -> None:
    tokens = await register(client, "reset@example.com")
    unknown = await client.post("/api/v1/auth/forgot-password", json={"email": "ghost@example.com"})
    known = await client.post("/api/v1/auth/forgot-password", json={"email": "reset@example.com"})
    assert unknown.status_code == known.status_code == 202
    assert unknown.json() == known.json()
    mails = [m for m in await sent_mail(services, "reset@example.com") if m["Subject"] == "Reset your password"]
    assert len(mails) == 1
    token = token_from(mails[0])
    weak = await client.post("/api/v1/auth/reset-password", json={"token": token, "password": "qwerty"})
    assert weak.status_code == 422
    reset = await client.post("/api/v1/auth/reset-password", json={"token": token, "password": "new-password-99x"})
    assert reset.status_code == 200
    assert (await client.get("/api/v1/auth/me", headers=bearer(tokens))).status_code == 401  # sessions revoked
    replay = await client.post("/api/v1/auth/reset-password", json={"token": token, "password": "another-pass-77y"})
    assert replay.status_code == 401
    await login(client, "reset@example.com", "new-password-99x")
    old = await client.post("/api/v1/auth/login", json={"email": "reset@example.com", "password": STRONG_PASSWORD})
    assert old.status_code == 401
    changed = [m for m in await sent_mail(services, "reset@example.com") if m["Subject"] == "Your password was changed"]
    assert len(changed) == 1


async def test_reset_token_expires_after_an_hour(client: httpx.AsyncClient, services: Services) -> None:
    from datetime import UTC, datetime, timedelta

    from mercato.platform import clock

    await register(client, "late@example.com")
    await client.post("/api/v1/auth/forgot-password", json={"email": "late@example.com"})
    mail = next(m for m in await sent_mail(services, "late@example.com") if m["Subject"] == "Reset your password")
    later = datetime.now(UTC) + timedelta(hours=1, seconds=5)
    clock.set_clock(lambda: later)
    try:
        response = await client.post(
            "/api/v1/auth/reset-password", json={"token": token_from(mail), "password": "new-password-99x"}
        )
    finally:
        clock.set_clock(None)
    assert response.status_code == 401


async def test_change_password_keeps_this_session_and_revokes_others(client: httpx.AsyncClient) -> None:
    tokens = await register(client, "change@example.com")
    other = await login(client, "change@example.com")
    wrong = await client.post(
        "/api/v1/auth/change-password",
        headers=bearer(tokens),
        json={"current_password": "wrong-password-1", "new_password": "brand-new-pass-55"},
    )
    assert wrong.status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=bearer(other))).status_code == 200
    ok = await client.post(
        "/api/v1/auth/change-password",
        headers=bearer(tokens),
        json={"current_password": STRONG_PASSWORD, "new_password": "brand-new-pass-55"},
    )
    assert ok.status_code == 200
    assert (await client.get("/api/v1/auth/me", headers=bearer(tokens))).status_code == 200
    assert (await client.get("/api/v1/auth/me", headers=bearer(other))).status_code == 401
    await login(client, "change@example.com", "brand-new-pass-55")


async def test_change_email_takes_effect_when_verified(client: httpx.AsyncClient, services: Services) -> None:
    tokens = await register(client, "old@example.com")
    await register(client, "taken@example.com")
    taken = await client.post(
        "/api/v1/auth/change-email",
        headers=bearer(tokens),
        json={"password": STRONG_PASSWORD, "new_email": "taken@example.com"},
    )
    assert taken.status_code == 409
    response = await client.post(
        "/api/v1/auth/change-email",
        headers=bearer(tokens),
        json={"password": STRONG_PASSWORD, "new_email": "new@example.com"},
    )
    assert response.status_code == 202
    assert (await client.get("/api/v1/auth/me", headers=bearer(tokens))).json()["email"] == "old@example.com"
    mail = (await sent_mail(services, "new@example.com"))[0]
    verified = await client.post("/api/v1/auth/verify-email", json={"token": token_from(mail)})
    assert verified.status_code == 200
    assert verified.json()["email"] == "new@example.com"
    assert (await client.get("/api/v1/auth/me", headers=bearer(tokens))).json()["email"] == "new@example.com"
    await login(client, "new@example.com")


async def test_an_email_or_password_change_voids_reset_links_already_sent(
    client: httpx.AsyncClient, services: Services
) -> None:
    """A reset link mailed to the old address must not take the account over after the email changed, nor after
    the password changed."""
    tokens = await register(client, "before@example.com")

    async def reset_link(address: str) -> str:
        await client.post("/api/v1/auth/forgot-password", json={"email": address})
        mails = [m for m in await sent_mail(services, address) if m["Subject"] == "Reset your password"]
        return token_from(mails[-1])

    stale = await reset_link("before@example.com")
    await client.post(
        "/api/v1/auth/change-email",
        headers=bearer(tokens),
        json={"password": STRONG_PASSWORD, "new_email": "after@example.com"},
    )
    change = (await sent_mail(services, "after@example.com"))[0]
    assert (await client.post("/api/v1/auth/verify-email", json={"token": token_from(change)})).status_code == 200
    taken_over = await client.post("/api/v1/auth/reset-password", json={"token": stale, "password": "attacker-pass-91"})
    assert taken_over.status_code == 401

    stale = await reset_link("after@example.com")
    changed = await client.post(
        "/api/v1/auth/change-password",
        headers=bearer(tokens),
        json={"current_password": STRONG_PASSWORD, "new_password": "brand-new-pass-55"},
    )
    assert changed.status_code == 200
    replay = await client.post("/api/v1/auth/reset-password", json={"token": stale, "password": "attacker-pass-91"})
    assert replay.status_code == 401
    await login(client, "after@example.com", "brand-new-pass-55")


async def test_a_new_password_is_never_the_accounts_email(client: httpx.AsyncClient, services: Services) -> None:
    address = "same-as-pass@example.com"
    tokens = await register(client, address)
    own_email = await client.post(
        "/api/v1/auth/change-password",
        headers=bearer(tokens),
        json={"current_password": STRONG_PASSWORD, "new_password": address},
    )
    assert own_email.status_code == 422 and own_email.json()["errors"][0]["loc"] == ["body", "new_password"]
    await client.post("/api/v1/auth/forgot-password", json={"email": address})
    mail = next(m for m in await sent_mail(services, address) if m["Subject"] == "Reset your password")
    reset = await client.post("/api/v1/auth/reset-password", json={"token": token_from(mail), "password": address})
    assert reset.status_code == 422 and reset.json()["errors"][0]["loc"] == ["body", "password"]
    await login(client, address)  # the password did not change


def _forge(services: Services, **changes) -> str:
    now = int(time.time())
    claims = {
        "iss": "mercato",
        "aud": "mercato-api",
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "jti": "x",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(changes.pop("claims", {}))
    key = changes.pop("key", services.settings.secret)
    return jwt.encode(claims, key, algorithm=changes.pop("alg", "HS256"))


async def test_bad_access_tokens_are_401(client: httpx.AsyncClient, services: Services) -> None:
    tokens = await register(client)
    real = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    same = {"sub": real["sub"], "sid": real["sid"]}
    header, payload, signature = tokens["access_token"].split(".")
    candidates = {
        "expired": _forge(services, claims={**same, "exp": int(time.time()) - 10}),
        "wrong audience": _forge(services, claims={**same, "aud": "someone-else"}),
        "wrong issuer": _forge(services, claims={**same, "iss": "evil"}),
        "wrong key": _forge(services, claims=same, key="not-the-secret-not-the-secret-123"),
        "tampered": f"{header}.{payload[:-2]}AA.{signature}",
        "alg none": jwt.encode({**real}, None, algorithm="none"),
        "garbage": "not.a.jwt",
    }
    for name, token in candidates.items():
        response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert response.json()["type"].endswith("/unauthorized"), name
    client.cookies.clear()
    assert (await client.get("/api/v1/auth/me")).status_code == 401


async def test_cookie_auth_needs_csrf_header_on_unsafe_methods(client: httpx.AsyncClient, services: Services) -> None:
    tokens = await register(client, "cookie@example.com")
    assert (await client.get("/api/v1/auth/me")).status_code == 200  # safe method: cookie alone is enough
    user_id = tokens["user"]["id"]
    blocked = await client.patch(f"/api/v1/users/{user_id}", json={"first_name": "Eve"})
    assert blocked.status_code == 403
    assert blocked.json()["type"].endswith("/forbidden")
    wrong = await client.patch(
        f"/api/v1/users/{user_id}", json={"first_name": "Eve"}, headers={"X-CSRF-Token": "guess"}
    )
    assert wrong.status_code == 403
    async with services.db.session(write=False) as session:
        assert (await session.get(User, uuid.UUID(user_id))).first_name is None
    csrf = client.cookies["mercato_csrf"]
    allowed = await client.patch(f"/api/v1/users/{user_id}", json={"first_name": "Eve"}, headers={"X-CSRF-Token": csrf})
    assert allowed.status_code == 200
    assert allowed.json()["first_name"] == "Eve"
    # bearer requests need no CSRF token even with cookies around
    with_bearer = await client.patch(f"/api/v1/users/{user_id}", json={"last_name": "B"}, headers=bearer(tokens))
    assert with_bearer.status_code == 200
