"""Request and response bodies of the payment endpoints (API.md "Payments", ``Refund`` in "Orders").

Money is a decimal string with two decimals in responses; requests accept a JSON number or string.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_validator

from mercato.orders.schemas import Money
from mercato.schemas import RequestModel, ResponseModel

Token = Annotated[str, Field(min_length=1, max_length=200, description="A token from the gateway's client library")]
Amount = Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2, description="Major units, e.g. 5.00")]

PAYMENT_EXAMPLE: dict[str, Any] = {
    "id": "01932c90-1111-7cc3-9d1e-3f6a2b1c0d9e",
    "order_id": "01932c80-1111-7cc3-9d1e-3f6a2b1c0d9e",
    "amount": "17.98",
    "refunded_amount": "0.00",
    "currency": "USD",
    "status": "completed",
    "method": {"brand": "visa", "last4": "4242"},
    "gateway": "test",
    "gateway_reference": "ch_test_5d41402abc4b2a76b9719d91",
    "failure_reason": None,
    "created_at": "2026-12-03T10:15:02.123456Z",
}
REFUND_EXAMPLE: dict[str, Any] = {
    "id": "01932c95-1111-7cc3-9d1e-3f6a2b1c0d9e",
    "order_id": "01932c80-1111-7cc3-9d1e-3f6a2b1c0d9e",
    "payment_id": "01932c90-1111-7cc3-9d1e-3f6a2b1c0d9e",
    "amount": "5.00",
    "currency": "USD",
    "reason": "Damaged in transit",
    "restock": False,
    "status": "completed",
    "created_at": "2026-12-04T09:00:00.000000Z",
}
METHOD_EXAMPLE: dict[str, Any] = {
    "id": "01932c99-1111-7cc3-9d1e-3f6a2b1c0d9e",
    "brand": "visa",
    "last4": "4242",
    "exp_month": 12,
    "exp_year": 2034,
    "is_default": True,
}


class PaymentCreate(RequestModel):
    """Pay an order's total with a saved method or a one-time token (exactly one of them)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"order_id": "01932c80-1111-7cc3-9d1e-3f6a2b1c0d9e", "payment_token": "tok_visa"}]
        }
    )

    order_id: uuid.UUID
    payment_method_id: uuid.UUID | None = None
    payment_token: Token | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PaymentCreate:
        if (self.payment_method_id is None) == (self.payment_token is None):
            raise ValueError("give exactly one of payment_method_id and payment_token")
        return self


class CardRead(ResponseModel):
    """The card as shown to people: brand and last four digits."""

    brand: str | None
    last4: str | None


class PaymentRead(ResponseModel):
    """API.md ``Payment``."""

    model_config = ConfigDict(json_schema_extra={"examples": [PAYMENT_EXAMPLE]})

    id: uuid.UUID
    order_id: uuid.UUID
    amount: Money
    refunded_amount: Money
    currency: str
    status: str = Field(description="pending | completed | failed | refunded | partially_refunded")
    method: CardRead
    gateway: str
    gateway_reference: str | None
    failure_reason: str | None
    created_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _card(cls, data: Any) -> Any:
        if hasattr(data, "method_brand"):
            return {
                **{name: getattr(data, name) for name in cls.model_fields if name != "method"},
                "method": {"brand": data.method_brand, "last4": data.method_last4},
            }
        return data


class RefundCreate(RequestModel):
    """A refund: ``amount`` (default: everything captured and not yet refunded), why, and whether the order's
    units go back on hand."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"amount": "5.00", "reason": "Damaged in transit", "restock": False}]}
    )

    amount: Amount | None = None
    reason: str = Field(min_length=1, max_length=500)
    restock: bool = False


class PaymentRefundCreate(RequestModel):
    """A refund of one payment (API.md ``POST /payments/{id}/refund``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"amount": "5.00", "reason": "Goodwill"}]})

    amount: Amount | None = None
    reason: str = Field(min_length=1, max_length=500)


class RefundRead(ResponseModel):
    """API.md ``Refund``."""

    model_config = ConfigDict(json_schema_extra={"examples": [REFUND_EXAMPLE]})

    id: uuid.UUID
    order_id: uuid.UUID
    payment_id: uuid.UUID
    amount: Money
    currency: str
    reason: str
    restock: bool
    status: str = Field(description="pending | completed | failed")
    created_at: datetime


class MethodCreate(RequestModel):
    """Save a card from a gateway token (the card number never reaches Mercato)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"payment_token": "tok_visa", "is_default": True}]})

    payment_token: Token
    is_default: bool = False


class MethodRead(ResponseModel):
    """A saved card: brand, last four digits, expiry, default flag."""

    model_config = ConfigDict(json_schema_extra={"examples": [METHOD_EXAMPLE]})

    id: uuid.UUID
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    is_default: bool


class WebhookAck(ResponseModel):
    """The answer to a gateway callback: ``duplicate`` when this event was handled before."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"received": True, "duplicate": False}]})

    received: bool = True
    duplicate: bool = False
