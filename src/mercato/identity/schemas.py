"""Request and response bodies of the identity endpoints (API.md §2 and "Users and addresses")."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, EmailStr, Field, ValidationInfo, field_validator

from mercato.identity import rules
from mercato.identity.models import API_KEY_ROLES, Role
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

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01932c6e-8f7a-7cc3-9d1e-3f6a2b1c0d9e",
                    "email": "ada@example.com",
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "phone": None,
                    "role": "customer",
                    "email_verified": False,
                    "created_at": "2026-11-22T08:00:00Z",
                    "updated_at": "2026-11-22T08:00:00Z",
                }
            ]
        }
    )

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

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "password": "correct-horse-battery-42",
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                }
            ]
        }
    )

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

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"email": "ada@example.com", "password": "correct-horse-battery-42"}]}
    )

    email: Annotated[str, Field(min_length=1, max_length=320, examples=["ada@example.com"])]
    password: Password


class TokenResponse(ResponseModel):
    """A signed-in session: the user and a token pair. ``expires_in`` is the access token's lifetime in seconds."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user": {
                        "id": "01932c6e-8f7a-7cc3-9d1e-3f6a2b1c0d9e",
                        "email": "ada@example.com",
                        "first_name": "Ada",
                        "last_name": "Lovelace",
                        "phone": None,
                        "role": "customer",
                        "email_verified": False,
                        "created_at": "2026-11-22T08:00:00Z",
                        "updated_at": "2026-11-22T08:00:00Z",
                    },
                    "access_token": "eyJhbGciOiJIUzI1NiIs...",
                    "refresh_token": "pXh3c0v4...",
                    "token_type": "bearer",
                    "expires_in": 900,
                }
            ]
        }
    )

    user: UserRead
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth 2.0 token type (RFC 6750)
    expires_in: int


class RefreshRequest(RequestModel):
    """``POST /auth/refresh-token``; the token may come from the ``mercato_refresh`` cookie instead."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"refresh_token": "pXh3c0v4Qk2Jr9..."}]}
    )

    refresh_token: str | None = Field(default=None, max_length=200)


class TokenRequest(RequestModel):
    """A single-use token received by email."""

    model_config = RequestModel.model_config | ConfigDict(json_schema_extra={"examples": [{"token": "b1Xq9Zc2..."}]})

    token: str = Field(min_length=1, max_length=200)


class ForgotPasswordRequest(RequestModel):
    """``POST /auth/forgot-password``."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"email": "ada@example.com"}]}
    )

    email: Annotated[str, Field(min_length=1, max_length=320)]


class ResetPasswordRequest(RequestModel):
    """``POST /auth/reset-password``: an emailed reset or invitation token and the new password."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"token": "b1Xq9Zc2...", "password": "a-new-long-passphrase-7"}]}
    )

    token: str = Field(min_length=1, max_length=200)
    password: Password

    @field_validator("password")
    @classmethod
    def _strong(cls, value: str) -> str:
        return _check_password(value, None)


class ChangePasswordRequest(RequestModel):
    """``POST /auth/change-password``."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [{"current_password": "correct-horse-battery-42", "new_password": "a-new-long-passphrase-7"}]
        }
    )

    current_password: Password
    new_password: Password

    @field_validator("new_password")
    @classmethod
    def _strong(cls, value: str) -> str:
        return _check_password(value, None)


class ChangeEmailRequest(RequestModel):
    """``POST /auth/change-email``: takes effect when the link sent to ``new_email`` is followed."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"password": "correct-horse-battery-42", "new_email": "ada@newmail.example"}]}
    )

    password: Password
    new_email: EmailStr


class SessionRead(ResponseModel):
    """One of the caller's sign-ins. ``current`` marks the one making this request."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01932c6f-1111-7cc3-9d1e-3f6a2b1c0d9e",
                    "method": "password",
                    "user_agent": "curl/8.5",
                    "ip": "203.0.113.7",
                    "created_at": "2026-11-22T08:00:00Z",
                    "last_used_at": "2026-11-22T08:10:00Z",
                    "expires_at": "2026-12-22T08:00:00Z",
                    "current": True,
                }
            ]
        }
    )

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

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"first_name": "Ada", "phone": "+44 20 7946 0018"}]}
    )

    first_name: Name | None = None
    last_name: Name | None = None
    phone: Annotated[str, Field(min_length=3, max_length=40, pattern=r"^\+?[0-9 ()\-.]+$")] | None = None


class StaffInvite(RequestModel):
    """``POST /admin/users``: invites a staff member, who sets a password from the emailed link."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"email": "clerk@example.com", "role": "sales", "first_name": "Pat"}]}
    )

    email: EmailStr
    role: Role
    first_name: Name | None = None
    last_name: Name | None = None


class RoleChange(RequestModel):
    """``PUT /admin/users/{id}/role``."""

    model_config = RequestModel.model_config | ConfigDict(json_schema_extra={"examples": [{"role": "procurement"}]})

    role: Role


class ApiKeyCreate(RequestModel):
    """``POST /admin/api-keys``."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"name": "warehouse-sync", "role": "procurement"}]}
    )

    name: Name
    role: Role = Field(
        description="`sales`, `procurement` or `admin`: a key acts for no user, so it cannot be a customer or a vendor"
    )

    @field_validator("role")
    @classmethod
    def _staff_role(cls, role: Role) -> Role:
        if role not in API_KEY_ROLES:
            raise ValueError("an API key acts for no user: its role must be sales, procurement or admin")
        return role


class ApiKeyRead(ResponseModel):
    """An API key without its secret."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01932c70-2222-7cc3-9d1e-3f6a2b1c0d9e",
                    "name": "warehouse-sync",
                    "role": "procurement",
                    "prefix": "mk_Zx81aQ",
                    "created_at": "2026-11-22T08:00:00Z",
                }
            ]
        }
    )

    id: uuid.UUID
    name: str
    role: Role
    prefix: str
    created_at: datetime


class ApiKeyCreated(ApiKeyRead):
    """The created key, with ``key`` shown this once."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01932c70-2222-7cc3-9d1e-3f6a2b1c0d9e",
                    "name": "warehouse-sync",
                    "role": "procurement",
                    "prefix": "mk_Zx81aQ",
                    "created_at": "2026-11-22T08:00:00Z",
                    "key": "mk_Zx81aQ3m...",
                }
            ]
        }
    )

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

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "label": "home",
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "line1": "12 St James's Square",
                    "city": "London",
                    "postal_code": "SW1Y 4JH",
                    "country": "GB",
                    "is_default": True,
                }
            ]
        }
    )

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

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"line2": "Flat 3", "is_default": True}]}
    )

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

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01932c71-3333-7cc3-9d1e-3f6a2b1c0d9e",
                    "label": "home",
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "line1": "12 St James's Square",
                    "line2": None,
                    "city": "London",
                    "region": None,
                    "postal_code": "SW1Y 4JH",
                    "country": "GB",
                    "phone": None,
                    "is_default": True,
                }
            ]
        }
    )

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
