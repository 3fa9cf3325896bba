"""``/api/v1/auth/oidc/*``: sign-in with the OpenID Connect providers of ``MERCATO_OIDC_PROVIDERS``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Query, Request, Response, status
from fastapi.responses import RedirectResponse

from mercato.cart.deps import CART_COOKIE
from mercato.errors import Conflict, NotFound, ServiceUnavailable
from mercato.identity import oidc
from mercato.identity.errors import OidcEmailNotVerified, OidcSignInFailed
from mercato.identity.router import issue_session, merge_cart_cookie
from mercato.identity.schemas import TokenResponse
from mercato.web.deps import ClientIp, ServicesDep
from mercato.web.problems import problems

router = APIRouter(prefix="/auth/oidc", tags=["auth"])

_REDIRECT: dict[int | str, dict[str, Any]] = {
    status.HTTP_302_FOUND: {
        "description": "To the provider's authorization endpoint; sets the 10-minute `mercato_oidc` cookie.",
    }
}


@router.get(
    "/{provider}/login",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    responses={**_REDIRECT, **problems(NotFound, ServiceUnavailable)},
    summary="Start signing in with an OpenID Connect provider",
)
async def login(provider: str, services: ServicesDep) -> RedirectResponse:
    """Redirects the browser to the provider (authorization code flow with PKCE `S256`, `state` and `nonce`).
    The state travels in a signed httpOnly cookie valid for 10 minutes, sent back only to
    `/api/v1/auth/oidc`. Unknown provider → 404; provider unreachable → 503."""
    start = await oidc.start_login(services.settings, provider)
    settings = services.settings
    response = RedirectResponse(start.url, status_code=status.HTTP_302_FOUND)
    response.set_cookie(
        oidc.STATE_COOKIE,
        start.cookie,
        max_age=start.max_age,
        httponly=True,
        secure=settings.tls or settings.public_url.startswith("https://"),
        samesite="lax",
        path=oidc.STATE_COOKIE_PATH,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get(
    "/{provider}/callback",
    response_model=TokenResponse,
    responses=problems(NotFound, OidcSignInFailed, OidcEmailNotVerified, Conflict, ServiceUnavailable),
    summary="Finish signing in with an OpenID Connect provider",
)
async def callback(
    provider: str,
    request: Request,
    response: Response,
    services: ServicesDep,
    ip: ClientIp,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
    iss: Annotated[str | None, Query(max_length=2048, description="RFC 9207 issuer identifier")] = None,
    cookie: Annotated[str | None, Cookie(alias=oidc.STATE_COOKIE, include_in_schema=False)] = None,
    cart: Annotated[str | None, Cookie(alias=CART_COOKIE, include_in_schema=False)] = None,
) -> TokenResponse:
    """The provider redirects here. Answers like `POST /auth/login` (tokens in the body and as cookies) for
    the account linked to the provider's subject; an account with the same email is linked only when the
    provider asserts the email verified (otherwise 409, nothing linked); anyone else gets a new customer
    account.
    A mismatched `state`, a refused code or an ID token that fails verification (RS256 signature from the
    provider's JWKS, `iss`, `aud`, `exp`, `nonce`) → 401. A guest cart (`mercato_cart` cookie) merges into the
    user's cart and the cookie is deleted."""
    who = await oidc.finish_login(
        services.settings, provider, code=code, state=state, error=error, issuer=iss, cookie=cookie
    )
    # the provider has answered: only now open the write transaction (committed before the response is sent)
    async with services.db.session(write=True) as session:
        signed_in = await oidc.sign_in(session, who, ip=ip, user_agent=request.headers.get("user-agent"))
        await merge_cart_cookie(session, response, signed_in, cart)
    response.delete_cookie(oidc.STATE_COOKIE, path=oidc.STATE_COOKIE_PATH)
    return issue_session(response, services, signed_in)
