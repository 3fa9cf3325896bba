"""Request and response bodies of the coupon endpoints (API.md "Coupons").

Money (a fixed coupon's ``value``, ``min_purchase``, ``subtotal``, ``discount``) is a JSON number or string with
at most two decimals in requests and a two-decimal string in responses, next to the store ``currency``. A
percentage coupon's ``value`` is a percentage (``"10.00"`` = 10 %), also as a two-decimal string.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_serializer

from mercato.promotions.errors import Reason
from mercato.promotions.models import Coupon, CouponType
from mercato.schemas import Instant, RequestModel, ResponseModel

#: Codes: letters, digits, ``-`` and ``_``; stored and shown upper-case, matched case-insensitively.
Code = Annotated[str, Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", examples=["TENOFF"])]
Prefix = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", examples=["XMAS"])]
Amount = Annotated[Decimal, Field(gt=0, le=Decimal("9999999999.99"), max_digits=12, decimal_places=2)]
Money = Annotated[Decimal, Field(ge=0, le=Decimal("9999999999.99"), max_digits=12, decimal_places=2)]
Limit = Annotated[int, Field(ge=1, le=1_000_000_000)]
Description = Annotated[str, Field(max_length=300)]

_TERMS_EXAMPLE: dict[str, Any] = {
    "type": "percentage",
    "value": "10",
    "description": "10 % off orders of 50.00 or more",
    "min_purchase": "50.00",
    "starts_at": "2026-12-01T00:00:00Z",
    "expires_at": "2027-01-01T00:00:00Z",
    "usage_limit": 500,
    "per_user_limit": 1,
    "is_public": True,
}


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.quantize(Decimal('0.01'))}"


class _Terms(RequestModel):
    """What every new coupon states: its discount, validity window and limits."""

    type: CouponType
    value: Amount = Field(description="Percent off (0 < value ≤ 100) or an amount off (> 0), two decimals at most.")
    description: Description | None = None
    min_purchase: Money | None = Field(default=None, description="Smallest subtotal (before discount) it applies to.")
    starts_at: Instant | None = None
    expires_at: Instant | None = Field(default=None, description="Exclusive; must be after `starts_at`.")
    usage_limit: Limit | None = Field(default=None, description="Total uses (orders); null = unlimited.")
    per_user_limit: Limit | None = Field(default=None, description="Uses per customer (user or guest email).")
    is_public: bool = Field(default=False, description="Listed by `GET /coupons` for everyone.")


class CouponCreate(_Terms):
    """``POST /coupons``."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"code": "WELCOME10", **_TERMS_EXAMPLE}]}
    )

    code: Code


class CouponBulkCreate(_Terms):
    """``POST /coupons/bulk``: ``count`` coupons with the same terms and generated codes ``PREFIX-XXXX-XXXX``."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"prefix": "XMAS", "count": 100, **_TERMS_EXAMPLE, "is_public": False}]}
    )

    prefix: Prefix
    count: Annotated[int, Field(ge=1, le=1000)]


class CouponUpdate(RequestModel):
    """``PATCH``/``PUT /coupons/{code}``: fields left out keep their value; the nullable ones may be set to
    null (e.g. ``expires_at: null`` removes the end date). The code cannot change."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"value": "15", "expires_at": "2027-02-01T00:00:00Z", "usage_limit": None}]}
    )

    type: CouponType | None = None
    value: Amount | None = None
    description: Description | None = None
    min_purchase: Money | None = None
    starts_at: Instant | None = None
    expires_at: Instant | None = None
    usage_limit: Limit | None = None
    per_user_limit: Limit | None = None
    is_public: bool | None = None


class CouponValidate(RequestModel):
    """``POST /coupons/{code}/validate``: the ``subtotal`` to try the coupon on (before discount); when omitted,
    the caller's cart subtotal."""

    model_config = RequestModel.model_config | ConfigDict(json_schema_extra={"examples": [{"subtotal": "60.00"}]})

    subtotal: Money | None = None


class CouponPublic(ResponseModel):
    """A coupon as everyone may see it: its terms and validity window, not its limits or usage."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "WELCOME10",
                    "type": "percentage",
                    "value": "10.00",
                    "description": "10 % off orders of 50.00 or more",
                    "min_purchase": "50.00",
                    "currency": "USD",
                    "starts_at": "2026-12-01T00:00:00Z",
                    "expires_at": "2027-01-01T00:00:00Z",
                }
            ]
        }
    )

    code: str
    type: CouponType
    value: Decimal
    description: str | None
    min_purchase: Decimal | None
    currency: str
    starts_at: datetime | None
    expires_at: datetime | None

    @field_serializer("value", "min_purchase")
    def _ser(self, value: Decimal | None) -> str | None:
        return _money(value)

    @classmethod
    def of(cls, coupon: Coupon, currency: str) -> CouponPublic:
        """The public view of ``coupon``; ``currency`` is the store currency."""
        return cls.model_validate({**_columns(coupon), "currency": currency})


class CouponRead(CouponPublic):
    """A coupon as admins see it: everything, with ``used_count`` (unreleased redemptions) and ``deleted_at``."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01932c6e-8f7a-7cc3-9d1e-3f6a2b1c0d9e",
                    "code": "WELCOME10",
                    "type": "percentage",
                    "value": "10.00",
                    "description": "10 % off orders of 50.00 or more",
                    "min_purchase": "50.00",
                    "currency": "USD",
                    "starts_at": "2026-12-01T00:00:00Z",
                    "expires_at": "2027-01-01T00:00:00Z",
                    "usage_limit": 500,
                    "per_user_limit": 1,
                    "used_count": 42,
                    "is_public": True,
                    "created_at": "2026-11-22T08:00:00Z",
                    "updated_at": "2026-11-22T08:00:00Z",
                    "deleted_at": None,
                }
            ]
        }
    )

    id: uuid.UUID
    usage_limit: int | None
    per_user_limit: int | None
    used_count: int
    is_public: bool
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None

    @classmethod
    def of(cls, coupon: Coupon, currency: str) -> CouponRead:
        """The admin view of ``coupon``; ``currency`` is the store currency."""
        return cls.model_validate({**_columns(coupon), "currency": currency})


def _columns(coupon: Coupon) -> dict[str, Any]:
    return {column.key: getattr(coupon, column.key) for column in Coupon.__table__.columns}


class CouponBatch(ResponseModel):
    """The result of ``POST /coupons/bulk``: how many coupons were created and their codes."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"count": 2, "codes": ["XMAS-7KQ4-MZ2P", "XMAS-H9TB-3WXC"]}]}
    )

    count: int
    codes: list[str]


class CouponValidation(ResponseModel):
    """Whether the coupon can be used now on ``subtotal``: ``discount`` is what the pricing function would take
    off (``"0.00"`` when not ``valid``); ``reason``/``detail`` say why not (null when valid)."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "valid": True,
                    "code": "WELCOME10",
                    "subtotal": "60.00",
                    "discount": "6.00",
                    "currency": "USD",
                    "reason": None,
                    "detail": None,
                },
                {
                    "valid": False,
                    "code": "WELCOME10",
                    "subtotal": "20.00",
                    "discount": "0.00",
                    "currency": "USD",
                    "reason": "below_minimum",
                    "detail": "The subtotal is below this coupon's minimum purchase.",
                },
            ]
        }
    )

    valid: bool
    code: str
    subtotal: Decimal
    discount: Decimal
    currency: str
    reason: Reason | None
    detail: str | None

    @field_serializer("subtotal", "discount")
    def _ser(self, value: Decimal) -> str | None:
        return _money(value)
