"""Account management use cases: profiles, addresses, staff invitations, roles, deletion and API keys.

Object-level authorisation lives here: a non-admin acting on another user's id gets :class:`NotFound`, never the
other user's data (API.md §2).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.audit import service as audit_service
from mercato.db.engine import after_commit
from mercato.db.queries import Paged
from mercato.errors import NotFound, ValidationFailed
from mercato.identity import emails, repository, rules, tokens
from mercato.identity import service as auth_service
from mercato.identity.errors import EmailTaken
from mercato.identity.models import Address, ApiKey, Role, User
from mercato.identity.principal import Principal
from mercato.identity.schemas import AddressCreate, AddressUpdate, ApiKeyCreate, StaffInvite, UserUpdate
from mercato.platform import clock
from mercato.platform.context import services_of


async def get_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> User:
    """The user ``user_id`` if the caller is that user or an admin.

    Raises:
        NotFound: no such live user, or the caller may not see it.
    """
    if not principal.is_admin and principal.user_id != user_id:
        raise NotFound("No such user.")
    user = await repository.user_by_id(session, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


async def find_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    """The live user ``user_id``, or None (for staff work such as orders taken on other channels)."""
    return await repository.user_by_id(session, user_id)


async def update_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID, body: UserUpdate) -> User:
    """Apply a partial profile update (fields sent as ``null`` are cleared)."""
    user = await get_user(session, principal, user_id)
    for name, value in body.model_dump(exclude_unset=True).items():
        setattr(user, name, value)
    user.updated_at = clock.now()
    await session.flush()
    auth_service.forget_user_after_commit(session, user.id)
    return user


async def delete_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> None:
    """Anonymise the account for good: personal fields erased, addresses and sign-in provider links deleted,
    sessions revoked (the router also forgets the saved cards and the cart, which other domains own).

    The row stays (orders keep pointing at it) with ``deleted_at`` set and an email no one can sign in with.
    """
    user = await get_user(session, principal, user_id)
    now = clock.now()
    user.email = f"deleted-{user.id.hex}@invalid"
    user.password_hash = None
    user.first_name = user.last_name = user.phone = None
    user.email_verified = False
    user.deleted_at = now
    user.updated_at = now
    await repository.delete_personal_rows(session, user.id)
    await auth_service.revoke_all_sessions(session, user.id, "account_deleted")
    audit_service.record(session, "user.deleted", "user", user.id)
    auth_service.forget_user_after_commit(session, user.id)


async def list_users(session: AsyncSession, *, role: Role | None, q: str | None, page: int, limit: int) -> Paged[User]:
    """Admin listing of live users."""
    return await repository.list_users(session, role=role, q=q, page=page, limit=limit)


async def invite_staff(session: AsyncSession, body: StaffInvite) -> User:
    """Create a staff account without a password and email a set-password link.

    Raises:
        EmailTaken: the email is in use (found by the check, or by the unique constraint when a concurrent request
            inserted it after the check, on PostgreSQL).
    """
    email = str(body.email).lower()
    if await repository.email_exists(session, email):
        raise EmailTaken(f"An account with email {email} already exists.")
    now = clock.now()
    user = User(
        id=clock.new_id(),
        email=email,
        password_hash=None,
        first_name=body.first_name,
        last_name=body.last_name,
        role=body.role,
        email_verified=False,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent invitation or registration of the same email committed first
        raise EmailTaken(f"An account with email {email} already exists.") from exc
    emails.invitation(session, email, body.role, auth_service.new_invitation_token(session, user))
    audit_service.record(session, "user.invited", "user", user.id, {"role": body.role, "email": email})
    return user


async def change_role(session: AsyncSession, user_id: uuid.UUID, role: Role) -> User:
    """Give ``user_id`` a new role; it applies to the user's very next request (sessions are revoked so that
    tokens issued under the old role stop working). Audited.

    Raises:
        NotFound: no such user.
    """
    user = await repository.user_by_id(session, user_id)
    if user is None:
        raise NotFound("No such user.")
    old = user.role
    if old != role:
        user.role = role
        user.updated_at = clock.now()
        await auth_service.revoke_all_sessions(session, user.id, "role_changed")
        audit_service.record(session, "user.role_changed", "user", user.id, {"role": [old, str(role)]})
        auth_service.forget_user_after_commit(session, user.id)
    await session.flush()
    return user


# --- addresses ------------------------------------------------------------------------------------------------


async def list_addresses(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, *, page: int, limit: int
) -> Paged[Address]:
    """The user's addresses, default first."""
    await get_user(session, principal, user_id)
    return await repository.addresses(session, user_id, page=page, limit=limit)


async def add_address(session: AsyncSession, principal: Principal, user_id: uuid.UUID, body: AddressCreate) -> Address:
    """Add an address; the first one, or one sent with ``is_default``, becomes the default.

    Raises:
        ValidationFailed: the postal code does not fit the country's format (field ``postal_code``).
    """
    user = await get_user(session, principal, user_id)
    data = body.model_dump()
    data["postal_code"] = _postal_code(data["country"], data["postal_code"])
    now = clock.now()
    address = Address(id=clock.new_id(), user_id=user.id, created_at=now, updated_at=now, **data)
    existing = await repository.addresses(session, user.id, page=1, limit=1)
    if existing.total == 0:
        address.is_default = True
    session.add(address)
    await session.flush()
    if address.is_default:
        await repository.clear_default_address(session, user.id, keep=address.id)
    return address


async def update_address(
    session: AsyncSession,
    principal: Principal,
    user_id: uuid.UUID,
    address_id: uuid.UUID,
    body: AddressUpdate,
) -> Address:
    """Partially update an address, re-checking the postal code against the (possibly new) country."""
    await get_user(session, principal, user_id)
    address = await repository.address(session, user_id, address_id)
    if address is None:
        raise NotFound("No such address.")
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    for required in ("first_name", "last_name", "line1", "city", "country", "is_default"):
        if required in changes and changes[required] is None:
            raise ValidationFailed(f"{required} cannot be null.", field=required)
    for name, value in changes.items():
        setattr(address, name, value)
    if "postal_code" in changes or "country" in changes:
        address.postal_code = _postal_code(address.country, address.postal_code)
    address.updated_at = clock.now()
    await session.flush()
    if changes.get("is_default"):
        await repository.clear_default_address(session, user_id, keep=address.id)
    return address


async def delete_address(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, address_id: uuid.UUID
) -> None:
    """Delete an address."""
    await get_user(session, principal, user_id)
    address = await repository.address(session, user_id, address_id)
    if address is None:
        raise NotFound("No such address.")
    await session.delete(address)


ADDRESS_FIELDS = ("first_name", "last_name", "line1", "line2", "city", "region", "postal_code", "country", "phone")


async def saved_address(session: AsyncSession, user_id: uuid.UUID, address_id: uuid.UUID) -> dict[str, Any]:
    """A copy of the user's saved address ``address_id`` (the fields of :data:`ADDRESS_FIELDS`), e.g. for an
    order's shipping address.

    Raises:
        NotFound: the address does not exist or is another user's (field ``shipping_address_id``).
    """
    address = await repository.address(session, user_id, address_id)
    if address is None:
        raise NotFound("No such address among yours.", field="shipping_address_id")
    return {name: getattr(address, name) for name in ADDRESS_FIELDS}


def checked_address(body: AddressCreate, *, field: str = "shipping_address") -> dict[str, Any]:
    """The fields of :data:`ADDRESS_FIELDS` of ``body`` with the postal code checked and normalised for its
    country.

    Raises:
        ValidationFailed: the postal code does not fit the country's format (``<field>.postal_code``).
    """
    data = body.model_dump(include=set(ADDRESS_FIELDS))
    try:
        data["postal_code"] = _postal_code(data["country"], data["postal_code"])
    except ValidationFailed as exc:
        raise ValidationFailed(exc.detail, loc=["body", field, "postal_code"]) from exc
    return data


def _postal_code(country: str, postal_code: str | None) -> str | None:
    if postal_code is None or not postal_code.strip():
        if country in rules.POSTAL_CODE_PATTERNS:
            raise ValidationFailed(f"A postal code is required for {country}.", field="postal_code")
        return None
    value = rules.normalize_postal_code(country, postal_code)
    if value is None:
        raise ValidationFailed(f"{postal_code!r} is not a valid postal code for {country}.", field="postal_code")
    return value


# --- API keys -------------------------------------------------------------------------------------------------


async def create_api_key(session: AsyncSession, principal: Principal, body: ApiKeyCreate) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the secret, which is shown once and stored only as a digest."""
    secret = tokens.new_opaque_token("mk_")
    key = ApiKey(
        id=clock.new_id(),
        name=body.name,
        role=body.role,
        prefix=secret[:10],
        key_hash=tokens.digest(secret),
        created_by=principal.user_id,
        created_at=clock.now(),
    )
    session.add(key)
    await session.flush()
    audit_service.record(session, "api_key.created", "api_key", key.id, {"name": body.name, "role": body.role})
    return key, secret


async def list_api_keys(session: AsyncSession, *, page: int, limit: int) -> Paged[ApiKey]:
    """Unrevoked keys (without secrets)."""
    return await repository.list_api_keys(session, page=page, limit=limit)


async def revoke_api_key(session: AsyncSession, key_id: uuid.UUID) -> None:
    """Revoke a key at once (its cached state is dropped after commit).

    Raises:
        NotFound: no such unrevoked key.
    """
    key = await repository.api_key(session, key_id)
    if key is None:
        raise NotFound("No such API key.")
    key.revoked_at = clock.now()
    audit_service.record(session, "api_key.revoked", "api_key", key.id, {"name": key.name})
    cache = services_of(session).cache
    digest = key.key_hash

    async def forget() -> None:
        await cache.delete(f"apikey:{digest}")

    after_commit(session, forget)
