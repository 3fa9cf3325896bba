"""``/api/v1/auth/*``: registration, sign-in, tokens, sessions, emailed tokens and credential changes."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Annotated

from fastapi import APIRouter, Cookie, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.cart import service as cart_service
from mercato.cart.deps import CART_COOKIE
from mercato.errors import RateLimited, Unauthorized
from mercato.identity import passwords
from mercato.identity import service as auth_service
from mercato.identity.errors import EmailTaken, InvalidCredentials, InvalidToken
from mercato.identity.schemas import (
    ChangeEmailRequest,
    ChangePasswordRequest,
    ForgotPasswordRequest,
    LoginRequest,
    RefreshRequest,
    RegisterRequest,
    ResetPasswordRequest,
    SessionRead,
    TokenRequest,
    TokenResponse,
    UserRead,
)
from mercato.web.deps import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    REFRESH_COOKIE,
    ClientIp,
    CurrentUser,
    ReadSessionDep,
    ServicesDep,
    SessionDep,
)
from mercato.web.pagination import Page, PageInfo
from mercato.web.problems import problems

router = APIRouter(prefix="/auth", tags=["auth"])
_USER_FIELDS = frozenset(UserRead.model_fields)


def issue_session(response: Response, services: ServicesDep, signed_in: auth_service.SignedIn) -> TokenResponse:
    """Shape a sign-in as :class:`TokenResponse` and set the ``mercato_access``, ``mercato_refresh`` and
    ``mercato_csrf`` cookies (httpOnly except the CSRF one; ``Secure`` under TLS; SameSite=Lax)."""
    settings = services.settings
    secure = settings.tls or settings.public_url.startswith("https://")
    response.set_cookie(
        ACCESS_COOKIE,
        signed_in.access_token,
        max_age=settings.access_token_ttl,
        httponly=True,
        secure=secure,
        samesite="lax",
        path="/",
    )
    response.set_cookie(
        REFRESH_COOKIE,
        signed_in.refresh_token,
        max_age=settings.refresh_token_ttl,
        httponly=True,
        secure=secure,
        samesite="lax",
        path="/api/v1/auth",
    )
    response.set_cookie(
        CSRF_COOKIE,
        secrets.token_urlsafe(32),
        max_age=settings.refresh_token_ttl,
        httponly=False,
        secure=secure,
        samesite="lax",
        path="/",
    )
    response.headers["Cache-Control"] = "no-store"
    return TokenResponse(
        user=UserRead.model_validate(signed_in.user),
        access_token=signed_in.access_token,
        refresh_token=signed_in.refresh_token,
        expires_in=signed_in.expires_in,
    )


def _clear_cookies(response: Response) -> None:
    response.delete_cookie(ACCESS_COOKIE, path="/")
    response.delete_cookie(REFRESH_COOKIE, path="/api/v1/auth")
    response.delete_cookie(CSRF_COOKIE, path="/")


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenResponse,
    responses=problems(EmailTaken, RateLimited),
    summary="Create a customer account and sign in",
)
async def register(
    body: RegisterRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    services: ServicesDep,
    ip: ClientIp,
    cart: Annotated[str | None, Cookie(alias=CART_COOKIE, include_in_schema=False)] = None,
) -> TokenResponse:
    """Creates a `customer` account, signs it in (tokens in the body and as cookies) and emails a verification
    link. Unknown fields such as `role` are refused with 422. A guest cart (`mercato_cart` cookie) moves into the
    new account's cart and the cookie is deleted."""
    await services.limiter.hit("register", ip)
    password_hash = await passwords.hash_password(body.password)
    signed_in = await auth_service.register(
        session,
        email=str(body.email),
        password_hash=password_hash,
        first_name=body.first_name,
        last_name=body.last_name,
        ip=ip,
        user_agent=request.headers.get("user-agent"),
    )
    await merge_cart_cookie(session, response, signed_in, cart)
    return issue_session(response, services, signed_in)


async def merge_cart_cookie(
    session: AsyncSession, response: Response, signed_in: auth_service.SignedIn, cart: str | None
) -> None:
    """At sign-in: merge the guest cart of the ``mercato_cart`` cookie (if sent) into the user's cart, in the
    request's transaction, and delete the cookie on ``response``."""
    if cart:
        await cart_service.merge_guest_cart(session, user_id=signed_in.user.id, guest_token=cart)
        response.delete_cookie(CART_COOKIE, path="/")


@router.post(
    "/login",
    response_model=TokenResponse,
    responses=problems(InvalidCredentials, RateLimited),
    summary="Sign in with email and password",
)
async def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    read_session: ReadSessionDep,
    services: ServicesDep,
    ip: ClientIp,
    cart: Annotated[str | None, Cookie(alias=CART_COOKIE, include_in_schema=False)] = None,
) -> TokenResponse:
    """Wrong email and wrong password get the same 401. Five failures per account (100 per IP) in 15 minutes
    are answered with 429. A guest cart (`mercato_cart` cookie) merges into the user's cart (quantities summed,
    capped by stock) and the cookie is deleted."""
    user = await auth_service.authenticate(read_session, email=body.email, password=body.password, ip=ip)
    signed_in = await auth_service.start_session(
        session, user, method="password", ip=ip, user_agent=request.headers.get("user-agent")
    )
    await merge_cart_cookie(session, response, signed_in, cart)
    return issue_session(response, services, signed_in)


@router.post(
    "/refresh-token",
    response_model=TokenResponse,
    responses=problems(InvalidToken),
    summary="Exchange a refresh token for a new token pair",
)
async def refresh_token(
    response: Response,
    session: SessionDep,
    services: ServicesDep,
    body: RefreshRequest | None = None,
    cookie: Annotated[str | None, Cookie(alias=REFRESH_COOKIE, include_in_schema=False)] = None,
) -> TokenResponse:
    """Refresh tokens rotate: each works once. Presenting a used one again revokes every token of that sign-in
    (reuse detection) and answers 401."""
    token = (body.refresh_token if body else None) or cookie
    if not token:
        raise InvalidToken("Send refresh_token in the body or the mercato_refresh cookie.")
    return issue_session(response, services, await auth_service.refresh(session, token))


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(Unauthorized),
    summary="Sign out of this session",
)
async def logout(session: SessionDep, user: CurrentUser) -> Response:
    """Revokes this session: its refresh token and access tokens stop working at once. Clears the cookies."""
    await auth_service.logout(session, user)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _clear_cookies(response)
    return response


@router.get("/me", response_model=UserRead, responses=problems(Unauthorized), summary="The signed-in user")
async def me(user: CurrentUser) -> Response:
    """Answered from the cached session state: no database round trip on a cache hit."""
    # the snapshot is UserRead.model_dump(mode="json") plus "deleted": send it without re-validating it
    body = {key: value for key, value in user.user.items() if key in _USER_FIELDS}
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@router.get("/sessions", response_model=Page[SessionRead], summary="My active sessions")
async def sessions(session: SessionDep, user: CurrentUser) -> Page[SessionRead]:
    """Every live sign-in of the caller, newest first; `current` marks this one."""
    rows = [SessionRead.model_validate(row) for row in await auth_service.list_sessions(session, user)]
    return Page[SessionRead](
        data=rows,
        pagination=PageInfo(page=1, limit=max(len(rows), 1), total=len(rows), total_pages=1 if rows else 0),
    )


@router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke one of my sessions")
async def revoke_session(session_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> None:
    """The session's tokens stop working at once (within 5 s on every other process)."""
    await auth_service.revoke_own_session(session, user, session_id)


@router.post(
    "/verify-email",
    response_model=UserRead,
    responses=problems(InvalidToken, EmailTaken),
    summary="Confirm an email address",
)
async def verify_email(body: TokenRequest, session: SessionDep) -> UserRead:
    """Consumes a verification (or email-change) token from an email."""
    return UserRead.model_validate(await auth_service.verify_email(session, body.token))


@router.post(
    "/forgot-password",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(RateLimited),
    summary="Email a password reset link",
)
async def forgot_password(
    body: ForgotPasswordRequest, session: SessionDep, services: ServicesDep, ip: ClientIp
) -> dict[str, str]:
    """Always 202, whether or not the account exists (no enumeration). The link is valid for one hour."""
    await services.limiter.hit("password-reset", ip)
    await auth_service.forgot_password(session, body.email)
    return {"status": "accepted"}


@router.post(
    "/reset-password",
    response_model=UserRead,
    responses=problems(InvalidToken),
    summary="Set a new password with an emailed token",
)
async def reset_password(body: ResetPasswordRequest, session: SessionDep) -> UserRead:
    """Tokens are single-use and expire after one hour (invitations: 72 hours). Every session is revoked."""
    password_hash = await passwords.hash_password(body.password)
    return UserRead.model_validate(await auth_service.reset_password(session, body.token, body.password, password_hash))


@router.post(
    "/change-password",
    response_model=UserRead,
    responses=problems(InvalidCredentials),
    summary="Change my password",
)
async def change_password(
    body: ChangePasswordRequest, session: SessionDep, read_session: ReadSessionDep, user: CurrentUser
) -> UserRead:
    """Needs the current password. Other sessions are revoked and a notice is emailed."""
    assert user.user_id is not None
    if not await auth_service.password_matches(read_session, user.user_id, body.current_password):
        raise InvalidCredentials("The current password is wrong.")
    password_hash = await passwords.hash_password(body.new_password)
    return UserRead.model_validate(await auth_service.change_password(session, user, body.new_password, password_hash))


@router.post(
    "/change-email",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(InvalidCredentials, EmailTaken),
    summary="Change my email address",
)
async def change_email(
    body: ChangeEmailRequest, session: SessionDep, read_session: ReadSessionDep, user: CurrentUser
) -> dict[str, str]:
    """Sends a confirmation link to the new address; the change takes effect when it is followed."""
    assert user.user_id is not None
    if not await auth_service.password_matches(read_session, user.user_id, body.password):
        raise InvalidCredentials("The password is wrong.")
    await auth_service.request_email_change(session, user, str(body.new_email))
    return {"status": "accepted"}
