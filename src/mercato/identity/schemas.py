"""Request and response bodies of the identity endpoints (API.md §2 and "Users and addresses")."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import EmailStr, Field, ValidationInfo, field_validator

from mercato.identity import rules
from mercato.identity.models import Role
from mercato.schemas import RequestModel, ResponseModel

Password = Annotated[str, Field(min_length=1, max_length=1024, examples=["correct-horse-battery-staple"])]
Name = Annotated[str, Field(min_length=1, max_length=100)]


def _check_password(value: str, email: str | None) -> str:
    problem = rules.password_problem(value, email)
    if problem:
        raise ValueError(problem)
    return value


class UserRead(ResponseModel):
    """A user as the API shows it (never the password hash)."""

    id: uuid.UUID
    email: str
    first_name: str | None
    last_name: str | None
    phone: str | None
    role: Role
    email_verified: bool
    created_at: datetime
    updated_at: datetime


class RegisterRequest(RequestModel):
    """``POST /auth/register``. The password must be 8–128 characters, not the email, not a common password."""

    email: EmailStr = Field(examples=["ada@example.com"])
    password: Password
    first_name: Name | None = None
    last_name: Name | None = None

    @field_validator("password")
    @classmethod
    def _strong(cls, value: str, info: ValidationInfo) -> str:
        return _check_password(value, info.data.get("email"))


class LoginRequest(RequestModel):
    """``POST /auth/login``."""

    email: Annotated[str, Field(min_length=1, max_length=320, examples=["ada@example.com"])]
    password: Password


class TokenResponse(ResponseModel):
    """A signed-in session: the user and a token pair. ``expires_in`` is the access token's lifetime in seconds."""

    user: UserRead
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class RefreshRequest(RequestModel):
    """``POST /auth/refresh-token``; the token may come from the ``mercato_refresh`` cookie instead."""

    refresh_token: str | None = Field(default=None, max_length=200)


class TokenRequest(RequestModel):
    """A single-use token received by email."""

    token: str = Field(min_length=1, max_length=200)


class ForgotPasswordRequest(RequestModel):
    """``POST /auth/forgot-password``."""

    email: Annotated[str, Field(min_length=1, max_length=320)]


class ResetPasswordRequest(RequestModel):
    """``POST /auth/reset-password``: an emailed reset or invitation token and the new password."""

    token: str = Field(min_length=1, max_length=200)
    password: Password

    @field_validator("password")
    @classmethod
    def _strong(cls, value: str) -> str:
        return _check_password(value, None)


class ChangePasswordRequest(RequestModel):
    """``POST /auth/change-password``."""

    current_password: Password
    new_password: Password

    @field_validator("new_password")
    @classmethod
    def _strong(cls, value: str) -> str:
        return _check_password(value, None)


class ChangeEmailRequest(RequestModel):
    """``POST /auth/change-email``: takes effect when the link sent to ``new_email`` is followed."""

    password: Password
    new_email: EmailStr


class SessionRead(ResponseModel):
    """One of the caller's sign-ins. ``current`` marks the one making this request."""

    id: uuid.UUID
    method: str
    user_agent: str | None
    ip: str | None
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    current: bool = False


class UserUpdate(RequestModel):
    """``PATCH /users/{id}``: fields left out keep their value."""

    first_name: Name | None = None
    last_name: Name | None = None
    phone: Annotated[str, Field(min_length=3, max_length=40, pattern=r"^\+?[0-9 ()\-.]+$")] | None = None


class StaffInvite(RequestModel):
    """``POST /admin/users``: invites a staff member, who sets a password from the emailed link."""

    email: EmailStr
    role: Role
    first_name: Name | None = None
    last_name: Name | None = None


class RoleChange(RequestModel):
    """``PUT /admin/users/{id}/role``."""

    role: Role


class ApiKeyCreate(RequestModel):
    """``POST /admin/api-keys``."""

    name: Name
    role: Role


class ApiKeyRead(ResponseModel):
    """An API key without its secret."""

    id: uuid.UUID
    name: str
    role: Role
    prefix: str
    created_at: datetime


class ApiKeyCreated(ApiKeyRead):
    """The created key, with ``key`` shown this once."""

    key: str


class AddressBase(RequestModel):
    """Fields shared by address creation and update."""

    @field_validator("country", check_fields=False)
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = rules.normalize_country(value)
        if code is None:
            raise ValueError("Not an ISO 3166-1 alpha-2 country code.")
        return code


class AddressCreate(AddressBase):
    """``POST /users/{id}/addresses``. ``postal_code`` is checked against the country's format where known."""

    label: Annotated[str, Field(max_length=50)] | None = None
    first_name: Name
    last_name: Name
    line1: Annotated[str, Field(min_length=1, max_length=200)]
    line2: Annotated[str, Field(max_length=200)] | None = None
    city: Annotated[str, Field(min_length=1, max_length=100)]
    region: Annotated[str, Field(max_length=100)] | None = None
    postal_code: Annotated[str, Field(max_length=20)] | None = None
    country: str = Field(examples=["US"])
    phone: Annotated[str, Field(max_length=40)] | None = None
    is_default: bool = False


class AddressUpdate(AddressBase):
    """``PATCH /users/{id}/addresses/{address_id}``: fields left out keep their value."""

    label: Annotated[str, Field(max_length=50)] | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    line1: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    line2: Annotated[str, Field(max_length=200)] | None = None
    city: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    region: Annotated[str, Field(max_length=100)] | None = None
    postal_code: Annotated[str, Field(max_length=20)] | None = None
    country: str | None = None
    phone: Annotated[str, Field(max_length=40)] | None = None
    is_default: bool | None = None


class AddressRead(ResponseModel):
    """An address as stored."""

    id: uuid.UUID
    label: str | None
    first_name: str
    last_name: str
    line1: str
    line2: str | None
    city: str
    region: str | None
    postal_code: str | None
    country: str
    phone: str | None
    is_default: bool


def user_snapshot(user: Any) -> dict[str, Any]:
    """The JSON-safe :class:`UserRead` of ``user`` plus ``deleted``, as cached for access-token checks."""
    data = UserRead.model_validate(user).model_dump(mode="json")
    data["deleted"] = user.deleted_at is not None
    return data
