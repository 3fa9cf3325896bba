"""OpenID Connect sign-in (API.md §2) against a real local issuer on loopback.

The issuer is a small Starlette app served by uvicorn in a background thread on 127.0.0.1: it publishes a
discovery document and a JWKS with a freshly generated RSA key, "authenticates" whoever the test puts in
``issuer.person`` at its authorization endpoint, and checks the client secret, the redirect URI and the PKCE
verifier at its token endpoint before returning an ID token signed with PyJWT. Each test asserts the database
after the calls, not only the status codes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from mercato.audit.models import AuditLog
from mercato.identity import oidc
from mercato.identity.models import AuthSession, OidcIdentity, User
from mercato.platform.context import Services
from tests.conftest import STRONG_PASSWORD, bearer, login, register, sent_mail, token_from

CLIENT_ID = "mercato-test-client"
CLIENT_SECRET = "s3cret-for-the-local-issuer"
PROVIDER = "local"
LOGIN = f"/api/v1/auth/oidc/{PROVIDER}/login"
PROBLEMS = "https://mercato.dev/problems/"


# --- the local issuer ---------------------------------------------------------------------------------------


class Issuer:
    """A minimal OpenID Provider. Tests change ``person`` (the claims about who signs in), ``overrides``
    (claims to replace; ``None`` removes one), ``signer`` (how the ID token is made) and ``refuse_code``."""

    def __init__(self) -> None:
        self.url = ""
        self.keys: list[tuple[str, rsa.RSAPrivateKey]] = [("key-1", _rsa_key())]
        self.person: dict[str, Any] = {
            "sub": "subject-1",
            "email": "ada@example.com",
            "email_verified": True,
            "given_name": "Ada",
            "family_name": "Lovelace",
        }
        self.overrides: dict[str, Any] = {}
        self.signer: Callable[[dict[str, Any]], str] | None = None
        self.refuse_code = False
        self.codes: dict[str, dict[str, Any]] = {}
        self.discovery_fetches = 0
        self.jwks_fetches = 0
        self.token_requests: list[dict[str, str]] = []

    def rotate_key(self) -> None:
        """Publish only a new key (new ``kid``) and sign with it from now on."""
        self.keys = [(f"key-{len(self.keys) + 1}", _rsa_key())]

    def sign(self, claims: dict[str, Any]) -> str:
        """RS256 with the current key, as a real provider signs."""
        kid, key = self.keys[-1]
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
            ]
        )

    async def _discovery(self, request: Request) -> Response:
        self.discovery_fetches += 1
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        self.jwks_fetches += 1
        keys = []
        for kid, key in self.keys:
            public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            keys.append({**public, "kid": kid, "use": "sig", "alg": "RS256"})
        return JSONResponse({"keys": keys})

    async def _authorize(self, request: Request) -> Response:
        query = request.query_params
        scopes = query.get("scope", "").split()
        if (
            query.get("response_type") != "code"
            or query.get("client_id") != CLIENT_ID
            or query.get("code_challenge_method") != "S256"
            or "openid" not in scopes
        ):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "nonce": query["nonce"],
            "challenge": query["code_challenge"],
            "redirect_uri": query["redirect_uri"],
        }
        target = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
        return RedirectResponse(target, status_code=302)

    async def _token(self, request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        self.token_requests.append({**form, "authorization": request.headers.get("authorization", "")})
        if not self._client_authenticated(request, form):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if (
            self.refuse_code
            or grant is None
            or form.get("grant_type") != "authorization_code"
            or grant["redirect_uri"] != form.get("redirect_uri")
            or grant["challenge"] != challenge
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
            **self.person,
        }
        for name, value in self.overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        id_token = (self.signer or self.sign)(claims)
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "expires_in": 3600,
                "id_token": id_token,
            }
        )

    @staticmethod
    def _client_authenticated(request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(header[6:]).decode().partition(":")
        else:
            client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        return client_id == CLIENT_ID and secrets.compare_digest(client_secret, CLIENT_SECRET)


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@contextmanager
def _serve(issuer: Issuer) -> Iterator[None]:
    """Run the issuer with uvicorn in a thread on a free loopback port until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    issuer.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        issuer.app(),
        lifespan="off",
        log_level="warning",
        access_log=False,
        loop="asyncio",
        http="h11",
        ws="none",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the local issuer did not start"
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def issuer(services: Services) -> Iterator[Issuer]:
    """A running local issuer, configured as provider ``local`` for the duration of the test."""
    issuer = Issuer()
    previous = services.settings.oidc_providers
    with _serve(issuer):
        services.settings.oidc_providers = {
            PROVIDER: {"issuer": issuer.url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        }
        oidc.clear_cache()
        try:
            yield issuer
        finally:
            services.settings.oidc_providers = previous
            oidc.clear_cache()


# --- helpers ------------------------------------------------------------------------------------------------


async def count(services: Services, model: type, *where: Any) -> int:
    async with services.db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def rows(services: Services, model: type, *where: Any) -> list[Any]:
    async with services.db.session(write=False) as session:
        return list((await session.execute(select(model).where(*where))).scalars().all())


async def start(client: httpx.AsyncClient) -> httpx.Response:
    """``GET /login``: the 302 to the provider (sets the state cookie in ``client``)."""
    response = await client.get(LOGIN)
    assert response.status_code == 302, response.text
    return response


async def authorize(location: str) -> str:
    """Follow the redirect to the local issuer, which signs ``issuer.person`` in and redirects back; returns
    the callback's path and query (to send to the app under test)."""
    async with httpx.AsyncClient() as http:
        back = await http.get(location)
    assert back.status_code == 302, back.text
    url = urlsplit(back.headers["location"])
    return f"{url.path}?{url.query}"


async def sign_in(client: httpx.AsyncClient) -> httpx.Response:
    """The whole browser round trip: login → provider → callback."""
    redirect = await start(client)
    return await client.get(await authorize(redirect.headers["location"]))


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def cookies_set(response: httpx.Response) -> dict[str, str]:
    """``Set-Cookie`` headers by cookie name."""
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


async def assert_nothing_signed_in(services: Services, response: httpx.Response, status: int = 401) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "mercato_access" not in cookies_set(response)
    assert await count(services, User) == 0
    assert await count(services, AuthSession) == 0
    assert await count(services, OidcIdentity) == 0


# --- the redirect -------------------------------------------------------------------------------------------


async def test_login_redirects_to_the_provider_with_pkce_state_and_nonce(
    client: httpx.AsyncClient, services: Services, issuer: Issuer
) -> None:
    response = await start(client)
    location = response.headers["location"]
    assert location.startswith(f"{issuer.url}/authorize?")
    query = query_of(location)
    assert query["response_type"] == "code"
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == f"{services.settings.public_url}/api/v1/auth/oidc/local/callback"
    assert query["scope"].split() == ["openid", "email", "profile"]
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43  # base64url of a SHA-256 digest, unpadded
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32 and query["state"] != query["nonce"]
    cookie = cookies_set(response)["mercato_oidc"]
    assert "HttpOnly" in cookie and "Path=/api/v1/auth/oidc" in cookie and "samesite=lax" in cookie.lower()
    assert "Max-Age=600" in cookie
    assert response.headers["cache-control"] == "no-store"
    assert issuer.discovery_fetches == 1
    second = await start(client)
    assert query_of(second.headers["location"])["state"] != query["state"]
    assert issuer.discovery_fetches == 1  # the discovery document is cached
    assert await count(services, User) == 0
    assert await count(services, AuthSession) == 0


async def test_unknown_provider_is_404(client: httpx.AsyncClient, services: Services, issuer: Issuer) -> None:
    for path in ("/api/v1/auth/oidc/nope/login", "/api/v1/auth/oidc/nope/callback?code=x&state=y"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json()["type"] == PROBLEMS + "not-found"
    assert issuer.discovery_fetches == 0
    assert await count(services, User) == 0


async def test_unreachable_provider_is_503(client: httpx.AsyncClient, services: Services) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    previous = services.settings.oidc_providers
    services.settings.oidc_providers = {
        "down": {"issuer": f"http://127.0.0.1:{port}", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    }
    oidc.clear_cache()
    try:
        response = await client.get("/api/v1/auth/oidc/down/login")
    finally:
        services.settings.oidc_providers = previous
    assert response.status_code == 503
    assert response.json()["type"] == PROBLEMS + "service-unavailable"
    assert "mercato_oidc" not in cookies_set(response)


# --- the callback: accounts ---------------------------------------------------------------------------------


async def test_callback_creates_an_account_and_signs_in_like_login(
    client: httpx.AsyncClient, services: Services, issuer: Issuer
) -> None:
    response = await sign_in(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["email"] == "ada@example.com"
    assert body["user"]["email_verified"] is True
    assert body["user"]["role"] == "customer"
    assert (body["user"]["first_name"], body["user"]["last_name"]) == ("Ada", "Lovelace")
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    cookies = cookies_set(response)
    assert "HttpOnly" in cookies["mercato_access"]
    assert "Path=/api/v1/auth" in cookies["mercato_refresh"]
    assert "HttpOnly" not in cookies["mercato_csrf"]
    assert "Max-Age=0" in cookies["mercato_oidc"] and "Path=/api/v1/auth/oidc" in cookies["mercato_oidc"]
    assert response.headers["cache-control"] == "no-store"
    # the issuer saw a confidential client using PKCE and the registered redirect URI
    [token_request] = issuer.token_requests
    assert token_request["authorization"].startswith("Basic ")
    assert token_request["redirect_uri"].endswith("/api/v1/auth/oidc/local/callback")
    assert len(token_request["code_verifier"]) >= 43
    # the database: one account without a password, its link, one session signed in by OIDC
    [user] = await rows(services, User)
    assert str(user.id) == body["user"]["id"]
    assert user.password_hash is None and user.email_verified is True
    [link] = await rows(services, OidcIdentity)
    assert (link.user_id, link.provider, link.subject, link.email) == (
        user.id,
        "local",
        "subject-1",
        "ada@example.com",
    )
    [auth] = await rows(services, AuthSession)
    assert (auth.user_id, auth.method) == (user.id, "oidc:local")
    me = await client.get("/api/v1/auth/me", headers=bearer(body))
    assert me.status_code == 200 and me.json()["id"] == body["user"]["id"]
    refreshed = await client.post("/api/v1/auth/refresh-token", json={"refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200


async def test_second_sign_in_reuses_the_account_and_the_cached_keys(
    client: httpx.AsyncClient, services: Services, issuer: Issuer
) -> None:
    first = await sign_in(client)
    issuer.person["email"] = "ada.lovelace@example.com"  # the email may change; the subject decides
    second = await sign_in(client)
    assert first.status_code == second.status_code == 200
    assert first.json()["user"]["id"] == second.json()["user"]["id"]
    assert await count(services, User) == 1
    assert await count(services, OidcIdentity) == 1
    assert await count(services, AuthSession, AuthSession.method == "oidc:local") == 2
    [link] = await rows(services, OidcIdentity)
    assert link.email == "ada.lovelace@example.com"
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (1, 1)


async def test_rotated_signing_key_is_fetched_once(
    client: httpx.AsyncClient, services: Services, issuer: Issuer
) -> None:
    assert (await sign_in(client)).status_code == 200
    issuer.rotate_key()
    response = await sign_in(client)
    assert response.status_code == 200, response.text
    assert issuer.jwks_fetches == 2
    assert await count(services, AuthSession) == 2


async def test_links_an_existing_account_when_the_provider_verified_the_email(
    client: httpx.AsyncClient, services: Services, issuer: Issuer
) -> None:
    tokens = await register(client, "ada@example.com")
    verified = await client.post(
        "/api/v1/auth/verify-email", json={"token": token_from((await sent_mail(services))[0])}
    )
    assert verified.status_code == 200, verified.text
    issuer.person["email"] = "Ada@Example.COM"
    response = await sign_in(client)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["id"] == tokens["user"]["id"]
    assert await count(services, User) == 1
    [link] = await rows(services, OidcIdentity)
    assert str(link.user_id) == tokens["user"]["id"]
    assert await count(services, AuthSession, AuthSession.method == "oidc:local") == 1
    assert await count(services, AuthSession, AuthSession.revoked_at.is_(None)) == 2  # registration + OIDC
    assert await count(services, AuditLog, AuditLog.action == "user.oidc_linked") == 1
    [user] = await rows(services, User)
    assert user.password_hash is not None  # the owner proved the address before: the password still works
    assert (await login(client, "ada@example.com", STRONG_PASSWORD))["user"]["id"] == tokens["user"]["id"]


async def test_linking_an_unverified_account_drops_credentials_an_impostor_may_hold(
    client: httpx.AsyncClient, services: Services, issuer: Issuer
) -> None:
    """Someone registers the victim's address (never verified) and keeps the tokens; when the victim signs in
    with a provider that vouches for the address, the impostor's password, sessions and refresh token stop."""
    impostor = await register(client, "ada@example.com")
    client.cookies.clear()
    issuer.person["email"] = "ada@example.com"
    response = await sign_in(client)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["id"] == impostor["user"]["id"]
    assert response.json()["user"]["email_verified"] is True  # the provider vouched for the address
    client.cookies.clear()
    assert (await client.get("/api/v1/auth/me", headers=bearer(impostor))).status_code == 401
    again = await client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": STRONG_PASSWORD})
    assert again.status_code == 401
    refreshed = await client.post("/api/v1/auth/refresh-token", json={"refresh_token": impostor["refresh_token"]})
    assert refreshed.status_code == 401
    assert await count(services, AuthSession, AuthSession.revoked_at.is_(None)) == 1  # the provider's only
    [entry] = await rows(services, AuditLog, AuditLog.action == "user.oidc_linked")
    assert entry.changes["unverified_credentials_revoked"] is True


@pytest.mark.parametrize("asserted", [False, "false", None])
async def test_does_not_link_when_the_provider_does_not_verify_the_email(
    client: httpx.AsyncClient, services: Services, issuer: Issuer, asserted: Any
) -> None:
    tokens = await register(client, "ada@example.com")
    issuer.overrides["email_verified"] = asserted  # None: the claim is left out
    response = await sign_in(client)
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == PROBLEMS + "conflict"
    assert "mercato_access" not in cookies_set(response)
    assert await count(services, OidcIdentity) == 0
    assert await count(services, User) == 1
    assert await count(services, AuthSession) == 1  # only the registration's
    assert await count(services, AuditLog, AuditLog.action == "user.oidc_linked") == 0
    [user] = await rows(services, User)
    assert str(user.id) == tokens["user"]["id"] and user.email_verified is False


async def test_new_account_with_an_unverified_email_stays_unverified(
    client: httpx.AsyncClient, services: Services, issuer: Issuer
) -> None:
    issuer.person["email_verified"] = False
    response = await sign_in(client)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["email_verified"] is False
    [user] = await rows(services, User)
    assert user.email_verified is False and user.password_hash is None
    assert await count(services, OidcIdentity) == 1


async def test_link_to_a_deleted_account_is_replaced_by_a_new_account(
    client: httpx.AsyncClient, services: Services, issuer: Issuer
) -> None:
    first = (await sign_in(client)).json()
    deleted = await client.delete(f"/api/v1/users/{first['user']['id']}", headers=bearer(first))
    assert deleted.status_code == 204
    response = await sign_in(client)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["id"] != first["user"]["id"]
    assert await count(services, User) == 2
    [link] = await rows(services, OidcIdentity)
    assert str(link.user_id) == response.json()["user"]["id"]


async def test_no_email_and_no_link_is_401(client: httpx.AsyncClient, services: Services, issuer: Issuer) -> None:
    issuer.overrides["email"] = None
    await assert_nothing_signed_in(services, await sign_in(client))


# --- the callback: refusals ---------------------------------------------------------------------------------


def _other_key_signer(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, _rsa_key(), algorithm="RS256", headers={"kid": "key-1"})


def _tamper(issuer: Issuer) -> Callable[[dict[str, Any]], str]:
    def sign(claims: dict[str, Any]) -> str:
        header, _, signature = issuer.sign(claims).split(".")
        payload = json.dumps({**claims, "sub": "mallory"}).encode()
        return f"{header}.{base64.urlsafe_b64encode(payload).rstrip(b'=').decode()}.{signature}"

    return sign


REFUSALS: dict[str, tuple[Callable[[Issuer], None], str]] = {
    "tampered payload": (lambda i: setattr(i, "signer", _tamper(i)), "bad_signature"),
    "signed with another key": (lambda i: setattr(i, "signer", _other_key_signer), "bad_signature"),
    "unknown kid": (
        lambda i: setattr(i, "signer", lambda c: jwt.encode(c, _rsa_key(), algorithm="RS256", headers={"kid": "who"})),
        "invalid_key_id",
    ),
    "alg none": (
        lambda i: setattr(i, "signer", lambda c: jwt.encode(c, None, algorithm="none", headers={"kid": "key-1"})),
        "Algorithm of 'none' is not allowed",
    ),
    "HS256 with the client secret": (
        lambda i: setattr(
            i, "signer", lambda c: jwt.encode(c, CLIENT_SECRET + "-padded-to-32-bytes", algorithm="HS256")
        ),
        "Algorithm of 'HS256' is not allowed",
    ),
    "wrong audience": (lambda i: i.overrides.update(aud="someone-else"), "'aud'"),
    "wrong issuer": (lambda i: i.overrides.update(iss="https://evil.example"), "'iss'"),
    "expired": (
        lambda i: i.overrides.update(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
        "expired",
    ),
    "no exp": (lambda i: i.overrides.update(exp=None), "Missing claim: 'exp'"),
    "wrong nonce": (lambda i: i.overrides.update(nonce="not-the-one-we-sent"), "Invalid claim: 'nonce'"),
    "no nonce": (lambda i: i.overrides.update(nonce=None), "Missing claim: 'nonce'"),
    "code refused": (lambda i: setattr(i, "refuse_code", True), "invalid_grant"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_untrustworthy_callbacks_are_401_and_change_nothing(
    client: httpx.AsyncClient, services: Services, issuer: Issuer, case: str
) -> None:
    setup, reason = REFUSALS[case]
    setup(issuer)
    response = await sign_in(client)
    await assert_nothing_signed_in(services, response)
    assert response.json()["type"] == PROBLEMS + "unauthorized"
    assert reason in response.json()["detail"]
    if case == "unknown kid":
        assert issuer.jwks_fetches == 2  # one refetch for the unknown key, then refused


async def test_mismatched_state_is_401_before_the_code_is_redeemed(
    client: httpx.AsyncClient, services: Services, issuer: Issuer
) -> None:
    callback = await authorize((await start(client)).headers["location"])
    path, query = callback.split("?", 1)
    params = dict(parse_qsl(query))
    forged = await client.get(f"{path}?{urlencode({**params, 'state': 'attacker-state'})}")
    await assert_nothing_signed_in(services, forged)
    missing = await client.get(f"{path}?{urlencode({'code': params['code']})}")
    await assert_nothing_signed_in(services, missing)
    assert issuer.token_requests == []


async def test_callback_without_the_state_cookie_is_401(
    client: httpx.AsyncClient, services: Services, issuer: Issuer
) -> None:
    callback = await authorize((await start(client)).headers["location"])
    client.cookies.clear()  # e.g. a callback URL planted in another browser (login CSRF)
    await assert_nothing_signed_in(services, await client.get(callback))
    assert issuer.token_requests == []


async def test_forged_state_cookie_is_401(client: httpx.AsyncClient, services: Services, issuer: Issuer) -> None:
    callback = await authorize((await start(client)).headers["location"])
    state = query_of(callback)["state"]
    forged = jwt.encode(
        {
            "iss": "mercato",
            "aud": "mercato-oidc-state",
            "iat": int(time.time()),
            "exp": int(time.time()) + 600,
            "provider": PROVIDER,
            "state": state,
            "nonce": "n",
            "code_verifier": "v" * 64,
        },
        "not-the-app-secret-" + uuid.uuid4().hex,
    )
    client.cookies.clear()
    response = await client.get(callback, headers={"Cookie": f"mercato_oidc={forged}"})
    await assert_nothing_signed_in(services, response)
    assert issuer.token_requests == []


async def test_provider_error_is_401(client: httpx.AsyncClient, services: Services, issuer: Issuer) -> None:
    state = query_of((await start(client)).headers["location"])["state"]
    response = await client.get(f"/api/v1/auth/oidc/{PROVIDER}/callback?error=access_denied&state={state}")
    await assert_nothing_signed_in(services, response)
    assert "access_denied" in response.json()["detail"]
