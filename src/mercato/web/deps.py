"""Dependencies every router uses, as ``Annotated`` aliases so a route signature reads like a sentence:
``SessionDep`` (the request's transaction), ``ReadSessionDep``, ``CurrentUser``, ``Staff(...)``, ``ClientIp``.

Credentials are looked for in this order: ``Authorization: Bearer``, ``X-API-Key``, the ``mercato_access``
cookie. Cookie-authenticated unsafe requests must carry ``X-CSRF-Token`` equal to the ``mercato_csrf`` cookie
(double-submit, OWASP CSRF cheat sheet); bearer and API-key requests need no CSRF token.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.db.engine import run_after_commit
from mercato.errors import DomainError, Forbidden, Unauthorized
from mercato.identity import service as auth_service
from mercato.identity.models import Role
from mercato.identity.principal import Principal
from mercato.platform import request_context
from mercato.platform.context import Services
from mercato.web.middleware import client_ip
from mercato.web.ratelimit import QUOTA_STATE

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ACCESS_COOKIE = "mercato_access"
REFRESH_COOKIE = "mercato_refresh"
CSRF_COOKIE = "mercato_csrf"

_bearer = HTTPBearer(auto_error=False, description="An access token from /auth/login or /auth/register.")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from /admin/api-keys.")


async def get_services(request: Request) -> Services:
    """The app's :class:`Services`."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_client_ip(request: Request) -> str:
    """The client's IP (see ``MERCATO_TRUSTED_PROXIES``)."""
    return _ip(request)


def _ip(request: Request) -> str:
    return client_ip(request.scope, request.app.state.services.settings.trusted_proxies)


ClientIp = Annotated[str, Depends(get_client_ip)]


async def _session(request: Request, services: ServicesDep) -> AsyncIterator[AsyncSession]:
    """The request's transaction: committed after the endpoint returns and before the response is sent; rolled
    back if the endpoint raises (unless the error asks to keep its changes, see ``DomainError.commit``)."""
    write = request.method not in SAFE_METHODS
    async with services.db.sessionmaker() if not write else services.db.write_sessionmaker() as session:
        try:
            yield session
        except DomainError as exc:
            if exc.commit:
                await session.commit()
                await run_after_commit(session)
            else:
                await session.rollback()
            raise
        except BaseException:
            await session.rollback()
            raise
        await session.commit()
        await run_after_commit(session)


async def _read_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    """A separate read-only transaction, for work done before the write transaction starts (password checks)."""
    async with services.db.sessionmaker() as session:
        yield session
        await session.rollback()


SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(_read_session, scope="function")]


async def _resolve_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal | None:
    """Who sent the request, without the CSRF rule (resolved once per request and shared).

    A stale or invalid ``mercato_access`` cookie counts as no credentials, so an old cookie never blocks public
    endpoints such as login. Raises:
        Unauthorized: an explicit bearer token or API key is invalid, expired or revoked.
    """
    services: Services = request.app.state.services
    principal: Principal | None = None
    if bearer is not None:
        principal = await auth_service.principal_from_access_token(services, bearer.credentials, via_cookie=False)
        if principal is None:
            raise Unauthorized("The access token is invalid, expired or revoked.")
    elif api_key:
        principal = await auth_service.principal_from_api_key(services, api_key)
        if principal is None:
            raise Unauthorized("The API key is invalid or revoked.")
    elif cookie := request.cookies.get(ACCESS_COOKIE):
        principal = await auth_service.principal_from_access_token(services, cookie, via_cookie=True)
    request_context.current.set(
        request_context.RequestContext(
            request_id=getattr(request.state, "request_id", None),
            ip=_ip(request),
            actor_id=principal.user_id if principal else None,
            api_key_id=principal.api_key_id if principal else None,
        )
    )
    return principal


ResolvedPrincipal = Annotated[Principal | None, Depends(_resolve_principal)]


async def optional_principal(request: Request, principal: ResolvedPrincipal) -> Principal | None:
    """The caller, or ``None`` when anonymous. Endpoints that act for the caller use this (or the stricter
    aliases below), so the CSRF rule applies to them.

    Raises:
        Forbidden: cookie authentication on an unsafe method without a matching ``X-CSRF-Token``.
    """
    if principal is not None and principal.via_cookie and request.method not in SAFE_METHODS:
        _check_csrf(request)
    return principal


def _check_csrf(request: Request) -> None:
    sent = request.headers.get("x-csrf-token", "")
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        raise Forbidden("Cookie-authenticated requests must send the X-CSRF-Token header (the mercato_csrf cookie).")


OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


async def current_principal(request: Request, principal: ResolvedPrincipal) -> Principal:
    """The caller; raises :class:`Unauthorized` when anonymous, :class:`Forbidden` on a CSRF failure.

    Each alias below depends on the shared :func:`_resolve_principal` directly: a flat dependency graph keeps
    FastAPI's per-request dependency solving cheap (see bench/profile_app.py).
    """
    principal = await optional_principal(request, principal)
    if principal is None:
        raise Unauthorized("Sign in, or send a bearer token or an API key.")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def current_user(request: Request, principal: ResolvedPrincipal) -> Principal:
    """A signed-in user (not an API key); raises :class:`Forbidden` for API keys."""
    principal = await current_principal(request, principal)
    if principal.user_id is None:
        raise Forbidden("This endpoint acts on a user's own data; API keys cannot use it.")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


def require(*roles: Role) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """Dependency factory: the caller must hold one of ``roles`` (admins always pass), else 403.

    This is the one permission check every router uses: ``Annotated[Principal, Depends(require(Role.sales))]``.
    """

    async def check(principal: CurrentPrincipal) -> Principal:
        if not principal.may(*roles):
            raise Forbidden("Your role does not allow this.")
        return principal

    return check


Admin = Annotated[Principal, Depends(require(Role.admin))]


async def general_rate_limit(request: Request, principal: ResolvedPrincipal) -> None:
    """The per-client limit on every ``/api/v1`` request (per user, or per IP when anonymous).

    Leaves the quota left in ``request.state`` (:data:`mercato.web.ratelimit.QUOTA_STATE`); the request middleware
    turns it into the rate-limit headers of whatever response the route sends (API.md §1: every response).
    Headers set on FastAPI's injected ``Response`` would be lost when a route returns its own ``Response``.

    Raises:
        RateLimited: the client has no request left in the window (429 with ``Retry-After``).
    """
    limiter = request.app.state.services.limiter
    if not limiter.enabled:
        return
    key = f"user:{principal.user_id}" if principal and principal.user_id else f"ip:{_ip(request)}"
    quota = await limiter.hit("default", key)
    if quota is not None:
        setattr(request.state, QUOTA_STATE, quota)
