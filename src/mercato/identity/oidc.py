"""OpenID Connect sign-in (API.md §2): the authorization code flow of OpenID Connect Core 1.0 §3.1 with PKCE
(RFC 7636, ``S256``), ``state`` and ``nonce``.

Three steps, the first two without the database (calls to the outside world never run inside a write
transaction, ARCHITECTURE.md):

1. :func:`start_login` discovers the provider (OpenID Connect Discovery 1.0), makes ``state``, ``nonce`` and a
   PKCE ``code_verifier``, and returns the authorization URL plus a state cookie that carries them to the
   callback: a JWT signed HS256 with the app secret, valid 10 minutes, httpOnly, scoped to
   ``/api/v1/auth/oidc``.
2. :func:`finish_login` checks the callback against that cookie, exchanges the code at the token endpoint and
   verifies the ID token against the provider's JWKS: RS256 only (``alg: none``, HS256 and everything else are
   refused), ``iss`` equal to the issuer, ``aud`` containing the client id, ``exp``, ``iat``, ``nonce``, and
   ``azp`` / ``at_hash`` when present (Core §3.1.3.7). Verification is Authlib's
   :class:`~authlib.oidc.core.CodeIDToken` over joserfc, the JOSE library Authlib itself builds on.
3. :func:`sign_in` takes the request's session (and never commits): it signs in the user linked to the
   provider's subject, or links an account whose email the provider asserts as verified, or creates a customer
   account, and opens an auth session as password login does.

Discovery documents (24 h) and key sets (1 h) are cached in this process, per issuer; an ID token whose
``kid`` is not in the cached key set makes one refetch of the JWKS (key rotation).
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt as jose_jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.audit import service as audit_service
from mercato.config import Settings
from mercato.errors import Conflict, NotFound, ServiceUnavailable
from mercato.identity import repository
from mercato.identity import service as auth_service
from mercato.identity.errors import OidcEmailNotVerified, OidcSignInFailed
from mercato.identity.models import OidcIdentity, Role, User
from mercato.platform import clock

#: Name and path of the cookie that carries ``state``, ``nonce`` and the PKCE verifier to the callback.
STATE_COOKIE = "mercato_oidc"
STATE_COOKIE_PATH = "/api/v1/auth/oidc"
#: Lifetime of the state cookie, in seconds.
STATE_TTL = 600
#: The only ID token signature algorithm accepted (API.md §2).
ALGORITHMS = ("RS256",)
#: Clock skew allowed on ``exp`` / ``iat`` / ``nbf``, in seconds.
LEEWAY = 60
#: Timeout of every call to a provider, in seconds.
HTTP_TIMEOUT = 10.0
DEFAULT_SCOPE = "openid email profile"
AUTH_METHODS = ("client_secret_basic", "client_secret_post")

_STATE_ISSUER = "mercato"
_STATE_AUDIENCE = "mercato-oidc-state"
_DISCOVERY_TTL = 24 * 3600.0
_JWKS_TTL = 3600.0


@dataclass(frozen=True)
class Provider:
    """One provider of ``MERCATO_OIDC_PROVIDERS``.

    ``issuer`` must equal the ``issuer`` of the provider's discovery document exactly; ``scope`` defaults to
    ``openid email profile``; ``auth_method`` (config key ``token_endpoint_auth_method``) is
    ``client_secret_basic`` or ``client_secret_post``, ``None`` to pick basic when the provider supports it.
    """

    name: str
    issuer: str
    client_id: str
    client_secret: str
    scope: str
    auth_method: str | None


@dataclass(frozen=True)
class LoginRedirect:
    """Where to send the browser (``url``) and the signed state cookie to set (``cookie``, for ``max_age``
    seconds)."""

    url: str
    cookie: str
    max_age: int


@dataclass(frozen=True)
class OidcUser:
    """What a verified ID token says: the provider's name and ``sub``, the email (lower-cased; ``None`` when
    not shared), whether the provider asserts it verified, and the given and family names (≤ 100
    characters)."""

    provider: str
    subject: str
    email: str | None
    email_verified: bool
    given_name: str | None
    family_name: str | None


# --- configuration ------------------------------------------------------------------------------------------


def get_provider(settings: Settings, name: str) -> Provider:
    """The provider ``name`` of ``settings.oidc_providers``.

    Raises:
        NotFound: no provider has that name.
        ServiceUnavailable: its configuration lacks ``issuer``, ``client_id`` or ``client_secret``, or names
            an unsupported ``token_endpoint_auth_method``.
    """
    config = settings.oidc_providers.get(name)
    if config is None:
        raise NotFound(f"No sign-in provider is called {name!r}.")
    issuer, client_id, secret = (config.get(key, "") for key in ("issuer", "client_id", "client_secret"))
    auth_method = config.get("token_endpoint_auth_method") or None
    if not (issuer and client_id and secret) or (auth_method is not None and auth_method not in AUTH_METHODS):
        raise ServiceUnavailable(f"The sign-in provider {name!r} is not configured correctly.")
    return Provider(name, issuer, client_id, secret, config.get("scope") or DEFAULT_SCOPE, auth_method)


def redirect_uri(settings: Settings, name: str) -> str:
    """The callback URL registered with the provider: ``{public_url}/api/v1/auth/oidc/{name}/callback``."""
    return f"{settings.public_url.rstrip('/')}{STATE_COOKIE_PATH}/{name}/callback"


# --- step 1: the redirect to the provider -------------------------------------------------------------------


async def start_login(settings: Settings, name: str) -> LoginRedirect:
    """Build the authorization request (Core §3.1.2.1): ``response_type=code``, ``client_id``,
    ``redirect_uri``, ``scope``, ``state``, ``nonce``, ``code_challenge`` and ``code_challenge_method=S256``.

    Raises:
        NotFound: unknown provider.
        ServiceUnavailable: the provider's discovery document cannot be fetched or is invalid.
    """
    provider = get_provider(settings, name)
    metadata = await _metadata(provider)
    state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
    url = prepare_grant_uri(
        metadata["authorization_endpoint"],
        provider.client_id,
        "code",
        redirect_uri=redirect_uri(settings, name),
        scope=provider.scope,
        state=state,
        nonce=nonce,
        code_challenge=create_s256_code_challenge(verifier),
        code_challenge_method="S256",
    )
    now = clock.now()
    cookie = jwt.encode(
        {
            "iss": _STATE_ISSUER,
            "aud": _STATE_AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=STATE_TTL)).timestamp()),
            "provider": name,
            "state": state,
            "nonce": nonce,
            "code_verifier": verifier,
        },
        settings.secret,
        algorithm="HS256",
    )
    return LoginRedirect(url, cookie, STATE_TTL)


# --- step 2: the callback -----------------------------------------------------------------------------------


async def finish_login(
    settings: Settings,
    name: str,
    *,
    code: str | None,
    state: str | None,
    error: str | None,
    issuer: str | None,
    cookie: str | None,
) -> OidcUser:
    """Verify the provider's redirect back (``code``, ``state``, ``error``, RFC 9207 ``iss``) against the
    state ``cookie``, redeem the code (with the PKCE verifier) and verify the ID token.

    Raises:
        NotFound: unknown provider.
        OidcSignInFailed: the provider answered with an error; the cookie is missing, expired, forged or
            for another provider; ``state`` does not match; the code is refused; the ID token is missing or
            invalid.
        ServiceUnavailable: the provider cannot be reached or answers with a server error.
    """
    provider = get_provider(settings, name)
    if error:
        raise OidcSignInFailed(f"The provider did not sign you in ({error[:100]}).")
    saved = _open_state_cookie(settings, cookie)
    if saved.get("provider") != name:
        raise OidcSignInFailed("The sign-in in progress was started with another provider.")
    if not state or not hmac.compare_digest(str(saved.get("state", "")).encode(), state.encode()):
        raise OidcSignInFailed("The state parameter does not match the sign-in in progress.")
    if issuer is not None and issuer != provider.issuer:
        raise OidcSignInFailed("The response names another issuer (RFC 9207).")
    if not code:
        raise OidcSignInFailed("The provider sent no authorization code.")
    metadata = await _metadata(provider)
    tokens = await _redeem_code(
        provider,
        metadata,
        code=code,
        verifier=str(saved.get("code_verifier", "")),
        redirect_to=redirect_uri(settings, name),
    )
    claims = await _verify_id_token(
        provider,
        metadata,
        tokens["id_token"],
        nonce=str(saved.get("nonce", "")),
        access_token=tokens.get("access_token"),
    )
    return OidcUser(
        provider=name,
        subject=str(claims["sub"]),
        email=_email(claims.get("email")),
        email_verified=_asserted(claims.get("email_verified")),
        given_name=_name(claims.get("given_name")),
        family_name=_name(claims.get("family_name")),
    )


def _open_state_cookie(settings: Settings, cookie: str | None) -> dict[str, Any]:
    if not cookie:
        raise OidcSignInFailed("No sign-in is in progress in this browser (the state cookie is missing).")
    try:
        saved: dict[str, Any] = jwt.decode(
            cookie,
            settings.secret,
            algorithms=["HS256"],
            audience=_STATE_AUDIENCE,
            issuer=_STATE_ISSUER,
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise OidcSignInFailed("The sign-in in progress has expired or its state cookie is invalid.") from exc
    return saved


async def _redeem_code(
    provider: Provider, metadata: dict[str, Any], *, code: str, verifier: str, redirect_to: str
) -> dict[str, Any]:
    """POST the token request (RFC 6749 §4.1.3 with RFC 7636 §4.5's ``code_verifier``), authenticating with
    the client secret (``client_secret_basic`` or ``client_secret_post``, RFC 6749 §2.3.1)."""
    body = prepare_token_request("authorization_code", code=code, redirect_uri=redirect_to, code_verifier=verifier)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    client_auth = ClientAuth(provider.client_id, provider.client_secret, _auth_method(provider, metadata))
    url, headers, body = client_auth.prepare("POST", metadata["token_endpoint"], headers, body)
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"The sign-in provider {provider.name!r} cannot be reached.") from exc
    data = _json_object(response)
    if response.status_code == 400:
        reason = str(data.get("error", "invalid_request")) if data else "invalid_request"
        raise OidcSignInFailed(f"The provider refused the authorization code ({reason[:100]}).")
    if response.status_code != 200 or data is None:
        raise ServiceUnavailable(
            f"The sign-in provider {provider.name!r} failed to redeem the code (HTTP {response.status_code})."
        )
    if not isinstance(data.get("id_token"), str):
        raise OidcSignInFailed("The provider returned no ID token.")
    return data


def _auth_method(provider: Provider, metadata: dict[str, Any]) -> str:
    if provider.auth_method:
        return provider.auth_method
    # OpenID Connect Discovery 1.0 §3: when absent, the default is client_secret_basic
    supported = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    return "client_secret_basic" if "client_secret_basic" in supported else "client_secret_post"


async def _verify_id_token(
    provider: Provider, metadata: dict[str, Any], id_token: str, *, nonce: str, access_token: Any
) -> dict[str, Any]:
    """Verify the signature against the cached JWKS (refetched once for an unknown ``kid``), then the
    claims."""
    registry = JWSRegistry(algorithms=list(ALGORITHMS), strict_check_header=False)
    try:
        try:
            token = jose_jwt.decode(id_token, await _key_set(provider, metadata), registry=registry)
        except InvalidKeyIdError:
            rotated = await _key_set(provider, metadata, refresh=True)
            token = jose_jwt.decode(id_token, rotated, registry=registry)
        claims = CodeIDToken(
            token.claims,
            token.header,
            options={
                "iss": {"essential": True, "value": provider.issuer},
                "aud": {"essential": True, "value": provider.client_id},
                "sub": {"essential": True},
                "exp": {"essential": True},
            },
            params={
                "nonce": nonce,
                "client_id": provider.client_id,
                "access_token": access_token if isinstance(access_token, str) else None,
            },
        )
        claims.validate(now=int(clock.now().timestamp()), leeway=LEEWAY)
    except JoseError as exc:
        reason = f"{exc.error}: {exc.description}" if exc.description else exc.error
        raise OidcSignInFailed(f"The ID token is invalid ({reason}).") from exc
    except (ValueError, TypeError) as exc:  # not even a JWS
        raise OidcSignInFailed("The ID token is malformed.") from exc
    if len(str(claims["sub"])) > 255:
        raise OidcSignInFailed("The ID token's subject is too long.")
    return dict(claims)


def _asserted(value: Any) -> bool:
    """``email_verified`` is a JSON boolean (Core §5.1); some providers send the string ``"true"``."""
    return value is True or value == "true"


def _email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    return email if "@" in email and len(email) <= 320 else None


def _name(value: Any) -> str | None:
    return (value.strip()[:100] or None) if isinstance(value, str) else None


# --- discovery and keys, cached per issuer ------------------------------------------------------------------


@dataclass
class _Cached:
    value: Any
    expires: float  # time.monotonic()


_discovery: dict[str, _Cached] = {}
_key_sets: dict[str, _Cached] = {}


def clear_cache() -> None:
    """Forget every cached discovery document and key set (tests; a provider's configuration change)."""
    _discovery.clear()
    _key_sets.clear()


async def _metadata(provider: Provider) -> dict[str, Any]:
    """The provider's discovery document (``{issuer}/.well-known/openid-configuration``), cached 24 h."""
    cached = _discovery.get(provider.issuer)
    if cached is not None and cached.expires > time.monotonic():
        value: dict[str, Any] = cached.value
        return value
    url = provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
    metadata = await _fetch_json(provider, url, "discovery document")
    # OpenID Connect Discovery 1.0 §4.3: the issuer must be exactly the one configured
    if metadata.get("issuer") != provider.issuer or not all(
        isinstance(metadata.get(key), str) for key in ("authorization_endpoint", "token_endpoint", "jwks_uri")
    ):
        raise ServiceUnavailable(f"The sign-in provider {provider.name!r} has an invalid discovery document.")
    _discovery[provider.issuer] = _Cached(metadata, time.monotonic() + _DISCOVERY_TTL)
    return metadata


async def _key_set(provider: Provider, metadata: dict[str, Any], *, refresh: bool = False) -> KeySet:
    """The provider's signing keys (``jwks_uri``), cached 1 h; ``refresh`` refetches them."""
    cached = _key_sets.get(provider.issuer)
    if cached is not None and cached.expires > time.monotonic() and not refresh:
        keys: KeySet = cached.value
        return keys
    document = await _fetch_json(provider, metadata["jwks_uri"], "key set")
    try:
        keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ServiceUnavailable(f"The sign-in provider {provider.name!r} has an invalid key set.") from exc
    _key_sets[provider.issuer] = _Cached(keys, time.monotonic() + _JWKS_TTL)
    return keys


async def _fetch_json(provider: Provider, url: str, what: str) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"The sign-in provider {provider.name!r} cannot be reached.") from exc
    data = _json_object(response)
    if response.status_code != 200 or data is None:
        raise ServiceUnavailable(
            f"The sign-in provider {provider.name!r} did not serve its {what} (HTTP {response.status_code})."
        )
    return data


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# --- step 3: the account ------------------------------------------------------------------------------------


async def sign_in(
    session: AsyncSession, who: OidcUser, *, ip: str | None, user_agent: str | None
) -> auth_service.SignedIn:
    """Sign in the person a verified ID token describes (API.md §2), in the request's transaction.

    1. ``(provider, sub)`` is linked to a live user → that user.
    2. Else a live user has the same email and the provider asserts ``email_verified`` → link it and sign in;
       the link is audited as ``user.oidc_linked``. If the account had not verified its email, its password is
       cleared and its sessions are revoked (they may belong to someone who registered the address first), and
       the address is marked verified.
    3. Else a new ``customer`` without a password, ``email_verified`` as the provider says, linked.

    The auth session's method is ``oidc:<provider>``. A link to a deleted account is dropped and the person is
    treated as new. Raises:
        OidcEmailNotVerified: an account has this email but the provider does not assert it verified (not
            linked).
        OidcSignInFailed: the provider shared no email and no account is linked yet.
        Conflict: a concurrent sign-in created the same link or account first (try again).
    """
    method = f"oidc:{who.provider}"[:20]
    link = await repository.oidc_identity(session, who.provider, who.subject)
    if link is not None:
        linked_user = await repository.user_by_id(session, link.user_id)
        if linked_user is not None:
            if who.email and link.email != who.email:
                link.email = who.email
            return await auth_service.start_session(session, linked_user, method=method, ip=ip, user_agent=user_agent)
        await session.delete(link)  # the account was deleted: its link is stale
        await session.flush()
    if who.email is None:
        raise OidcSignInFailed("The provider did not share an email address; allow it and try again.")
    now = clock.now()
    user = await repository.user_by_email(session, who.email)
    if user is not None:
        if not who.email_verified:
            raise OidcEmailNotVerified(
                f"An account with email {who.email} exists, but {who.provider} does not confirm that the "
                "address is verified. Sign in with your password instead."
            )
        changes: dict[str, Any] = {"provider": who.provider, "subject": who.subject}
        if not user.email_verified:
            # Whoever registered this address never proved it: the password and sessions may be an impostor's,
            # who registered the victim's email first and waited for the owner to sign in with the provider.
            # The provider has now proved who owns it, so those credentials go (a password can be set again
            # through the reset email, which reaches the owner).
            user.email_verified = True
            user.password_hash = None
            user.updated_at = now
            await auth_service.revoke_all_sessions(session, user.id, "oidc_claimed")
            auth_service.forget_user_after_commit(session, user.id)
            changes["unverified_credentials_revoked"] = True
        audit_service.record(session, "user.oidc_linked", "user", user.id, changes, actor_id=user.id)
    else:
        user = User(
            id=clock.new_id(),
            email=who.email,
            password_hash=None,
            first_name=who.given_name,
            last_name=who.family_name,
            role=Role.customer,
            email_verified=who.email_verified,
            created_at=now,
            updated_at=now,
        )
    try:
        session.add(user)
        await session.flush()  # the user row first: the link refers to it
        session.add(
            OidcIdentity(
                id=clock.new_id(),
                user_id=user.id,
                provider=who.provider,
                subject=who.subject,
                email=who.email,
                created_at=now,
            )
        )
        await session.flush()
    except IntegrityError as exc:  # a concurrent first sign-in of the same person won the race
        raise Conflict("Another sign-in for this account happened at the same moment; try again.") from exc
    return await auth_service.start_session(session, user, method=method, ip=ip, user_agent=user_agent)
