"""``/api/v1/users/*`` (profiles and addresses) and the admin user and API-key endpoints."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from mercato.cart import service as cart_service
from mercato.errors import Forbidden, NotFound, ValidationFailed
from mercato.identity import users_service
from mercato.identity.errors import EmailTaken
from mercato.identity.models import Role
from mercato.identity.schemas import (
    AddressCreate,
    AddressRead,
    AddressUpdate,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    RoleChange,
    StaffInvite,
    UserRead,
    UserUpdate,
)
from mercato.payments import service as payments_service
from mercato.web.deps import Admin, CurrentUser, SessionDep
from mercato.web.pagination import Page, PageDep, page_of
from mercato.web.problems import problems

router = APIRouter(tags=["users"])
admin_router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/users", response_model=Page[UserRead], summary="List users (admin)")
@admin_router.get("/users", response_model=Page[UserRead], summary="List users", operation_id="admin_list_users")
async def list_users(
    request: Request,
    response: Response,
    session: SessionDep,
    _: Admin,
    paging: PageDep,
    role: Role | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Part of email or name")] = None,
) -> Page[UserRead]:
    """Live users, newest first."""
    found = await users_service.list_users(session, role=role, q=q, page=paging.page, limit=paging.limit)
    return page_of(UserRead, request, response, found)


@router.get("/users/{user_id}", response_model=UserRead, responses=problems(NotFound), summary="Get a user")
async def get_user(user_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> UserRead:
    """Yourself, or anyone for an admin; another customer's id is a 404."""
    return UserRead.model_validate(await users_service.get_user(session, user, user_id))


@router.patch("/users/{user_id}", response_model=UserRead, responses=problems(NotFound), summary="Update a profile")
@router.put("/users/{user_id}", response_model=UserRead, include_in_schema=False)
async def update_user(user_id: uuid.UUID, body: UserUpdate, session: SessionDep, user: CurrentUser) -> UserRead:
    """Partial update of `first_name`, `last_name`, `phone`. `PUT` is accepted as an alias."""
    return UserRead.model_validate(await users_service.update_user(session, user, user_id, body))


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(NotFound),
    summary="Delete (anonymise) an account",
)
async def delete_user(user_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> None:
    """Erases personal data for good: profile fields, addresses, sign-in provider links, saved cards and the
    cart; signs out everywhere. Orders and payments are kept (API.md: "keeps orders")."""
    await users_service.delete_user(session, user, user_id)
    await payments_service.forget_methods(session, user_id)
    await cart_service.delete_user_cart(session, user_id)


@router.get(
    "/users/{user_id}/addresses",
    response_model=Page[AddressRead],
    responses=problems(NotFound),
    summary="List addresses",
)
async def list_addresses(
    user_id: uuid.UUID,
    request: Request,
    response: Response,
    session: SessionDep,
    user: CurrentUser,
    paging: PageDep,
) -> Page[AddressRead]:
    """The default address first."""
    found = await users_service.list_addresses(session, user, user_id, page=paging.page, limit=paging.limit)
    return page_of(AddressRead, request, response, found)


@router.post(
    "/users/{user_id}/addresses",
    status_code=status.HTTP_201_CREATED,
    response_model=AddressRead,
    responses=problems(NotFound, ValidationFailed),
    summary="Add an address",
)
async def add_address(user_id: uuid.UUID, body: AddressCreate, session: SessionDep, user: CurrentUser) -> AddressRead:
    """`country` is ISO 3166-1 alpha-2; `postal_code` must fit the country's format where one is known
    (US, GB, DE, FR, CA, NL, IT, ES, AU, JP, BR, IN)."""
    return AddressRead.model_validate(await users_service.add_address(session, user, user_id, body))


@router.patch(
    "/users/{user_id}/addresses/{address_id}",
    response_model=AddressRead,
    responses=problems(NotFound, ValidationFailed),
    summary="Update an address",
)
@router.put("/users/{user_id}/addresses/{address_id}", response_model=AddressRead, include_in_schema=False)
async def update_address(
    user_id: uuid.UUID, address_id: uuid.UUID, body: AddressUpdate, session: SessionDep, user: CurrentUser
) -> AddressRead:
    """Partial update; the postal code is re-checked when it or the country changes."""
    return AddressRead.model_validate(await users_service.update_address(session, user, user_id, address_id, body))


@router.delete(
    "/users/{user_id}/addresses/{address_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(NotFound),
    summary="Delete an address",
)
async def delete_address(user_id: uuid.UUID, address_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> None:
    """Removes the address."""
    await users_service.delete_address(session, user, user_id, address_id)


@admin_router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=problems(EmailTaken, Forbidden),
    summary="Invite a staff member",
)
async def invite_staff(body: StaffInvite, session: SessionDep, _: Admin) -> UserRead:
    """Creates the account without a password and emails a single-use set-password link (72 h)."""
    return UserRead.model_validate(await users_service.invite_staff(session, body))


@admin_router.put(
    "/users/{user_id}/role",
    response_model=UserRead,
    responses=problems(NotFound),
    summary="Change a user's role",
)
async def change_role(user_id: uuid.UUID, body: RoleChange, session: SessionDep, _: Admin) -> UserRead:
    """Audited. The user's sessions are revoked so the new role applies at once."""
    return UserRead.model_validate(await users_service.change_role(session, user_id, body.role))


@admin_router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(NotFound),
    summary="Delete (anonymise) a user",
)
async def admin_delete_user(user_id: uuid.UUID, session: SessionDep, admin: Admin) -> None:
    """Audited; same effect as the user deleting their own account."""
    await users_service.delete_user(session, admin, user_id)


@admin_router.post(
    "/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    summary="Create an API key",
)
async def create_api_key(body: ApiKeyCreate, session: SessionDep, admin: Admin) -> ApiKeyCreated:
    """The `key` is shown in this response only; send it as `X-API-Key`."""
    key, secret = await users_service.create_api_key(session, admin, body)
    return ApiKeyCreated(
        id=key.id,
        name=key.name,
        role=Role(key.role),
        prefix=key.prefix,
        created_at=key.created_at,
        key=secret,
    )


@admin_router.get("/api-keys", response_model=Page[ApiKeyRead], summary="List API keys")
async def list_api_keys(
    request: Request, response: Response, session: SessionDep, _: Admin, paging: PageDep
) -> Page[ApiKeyRead]:
    """Keys are listed without their secrets."""
    found = await users_service.list_api_keys(session, page=paging.page, limit=paging.limit)
    return page_of(ApiKeyRead, request, response, found)


@admin_router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(NotFound),
    summary="Revoke an API key",
)
async def revoke_api_key(key_id: uuid.UUID, session: SessionDep, _: Admin) -> None:
    """The key stops working at once."""
    await users_service.revoke_api_key(session, key_id)
