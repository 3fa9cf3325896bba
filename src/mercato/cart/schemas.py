"""Request and response bodies of the cart endpoints (API.md "Cart").

Quantities are JSON integers (``1.5`` or ``"2"`` are refused with 422). Money in responses is a decimal string with
exactly two decimals next to the store ``currency``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_serializer

from mercato.cart import service
from mercato.schemas import RequestModel, ResponseModel

Quantity = Annotated[int, Field(strict=True, ge=1, le=service.MAX_LINE_QUANTITY, examples=[2])]
NewQuantity = Annotated[int, Field(strict=True, ge=0, le=service.MAX_LINE_QUANTITY, examples=[3])]
_PRODUCT = "0193a1c2-7d4e-7b8a-9c1d-2e3f4a5b6c7d"
_VARIANT = "0193a1c2-7d4e-7b8a-9c1d-2e3f4a5b6c80"


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.quantize(Decimal('0.01'))}"


class CartItemAdd(RequestModel):
    """``POST /cart/items``: a product (``variant_id`` required for a product sold by variant) and 1–100 units."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"product_id": _PRODUCT, "variant_id": _VARIANT, "quantity": 2}]}
    )

    product_id: uuid.UUID
    variant_id: uuid.UUID | None = None
    quantity: Quantity


class CartItemsAdd(RequestModel):
    """``POST /cart/items/bulk``: up to 100 lines, added all or nothing."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"product_id": _PRODUCT, "quantity": 1},
                        {"product_id": _PRODUCT, "variant_id": _VARIANT, "quantity": 2},
                    ]
                }
            ]
        }
    )

    items: list[CartItemAdd] = Field(min_length=1, max_length=100)


class CartItemUpdate(RequestModel):
    """``PUT``/``PATCH /cart/items/{item_id}``: the line's new quantity, 0–100 (0 removes the line)."""

    model_config = RequestModel.model_config | ConfigDict(json_schema_extra={"examples": [{"quantity": 3}]})

    quantity: NewQuantity


class CouponApply(RequestModel):
    """``POST /cart/apply-coupon``: a coupon code (case-insensitive)."""

    model_config = RequestModel.model_config | ConfigDict(json_schema_extra={"examples": [{"code": "WELCOME10"}]})

    code: Annotated[str, Field(min_length=1, max_length=64)]


class CartLineRead(ResponseModel):
    """A cart line at current catalog prices. A line no longer for sale has ``available`` 0 and ``name``, ``sku``,
    ``unit_price`` and ``line_total`` null (it counts in no total; remove it to check out)."""

    id: uuid.UUID
    product_id: uuid.UUID
    variant_id: uuid.UUID | None
    name: str | None
    sku: str | None
    unit_price: Decimal | None = Field(description="Current catalog price of one unit (tax-exclusive).")
    quantity: int
    line_total: Decimal | None = Field(description="`unit_price × quantity`, rounded half-even to the cent.")
    available: int = Field(description="Units available now (on hand − reserved).")

    @field_serializer("unit_price", "line_total")
    def _amounts(self, value: Decimal | None) -> str | None:
        return _money(value)


class CartCouponRead(ResponseModel):
    """The coupon giving the discount: `percentage` (`value` percent off the subtotal) or `fixed` (an amount,
    capped at the subtotal)."""

    code: str
    type: str
    value: Decimal

    @field_serializer("value")
    def _amount(self, value: Decimal) -> str | None:
        return _money(value)


class CartCouponError(ResponseModel):
    """Why the applied coupon gives no discount now (the reasons of `coupon-invalid`); it stays applied and is
    checked again on every read and at checkout."""

    code: str
    reason: str
    detail: str


_CART_EXAMPLE: dict[str, Any] = {
    "id": "0193a1c2-7d4e-7b8a-9c1d-2e3f4a5b6c00",
    "items": [
        {
            "id": "0193a1c2-7d4e-7b8a-9c1d-2e3f4a5b6c01",
            "product_id": _PRODUCT,
            "variant_id": _VARIANT,
            "name": "Monospace Tee – Black / M",
            "sku": "TEE-BLK-M",
            "unit_price": "24.00",
            "quantity": 2,
            "line_total": "48.00",
            "available": 12,
        }
    ],
    "coupon": {"code": "WELCOME10", "type": "percentage", "value": "10.00"},
    "coupon_error": None,
    "subtotal": "48.00",
    "discount_total": "4.80",
    "shipping_total": "0.00",
    "tax_total": "0.00",
    "total": "43.20",
    "currency": "USD",
    "item_count": 2,
    "expires_at": "2027-01-02T10:00:00Z",
}


class CartRead(ResponseModel):
    """The caller's cart priced now with the one pricing function (API.md "Cart"): `total = subtotal −
    discount_total + shipping_total + tax_total`; shipping and tax are 0 until checkout knows the address and
    method. `id` and `expires_at` are null while the caller has no cart. `item_count` is the sum of the quantities
    of the lines for sale."""

    model_config = ResponseModel.model_config | ConfigDict(json_schema_extra={"examples": [_CART_EXAMPLE]})

    id: uuid.UUID | None
    items: list[CartLineRead]
    coupon: CartCouponRead | None
    coupon_error: CartCouponError | None = Field(
        description="Set when the applied coupon cannot be used now; the cart then has no discount."
    )
    subtotal: Decimal
    discount_total: Decimal
    shipping_total: Decimal
    tax_total: Decimal
    total: Decimal
    currency: str
    item_count: int
    expires_at: datetime | None

    @field_serializer("subtotal", "discount_total", "shipping_total", "tax_total", "total")
    def _amounts(self, value: Decimal) -> str | None:
        return _money(value)

    @classmethod
    def of(cls, cart: service.CartView, currency: str) -> CartRead:
        """Shape a :class:`~mercato.cart.service.CartView` in the store ``currency``."""
        return cls(
            id=cart.id,
            items=[CartLineRead.model_validate(item) for item in cart.items],
            coupon=CartCouponRead.model_validate(cart.coupon) if cart.coupon else None,
            coupon_error=CartCouponError.model_validate(cart.coupon_error) if cart.coupon_error else None,
            subtotal=cart.subtotal,
            discount_total=cart.discount_total,
            shipping_total=cart.shipping_total,
            tax_total=cart.tax_total,
            total=cart.total,
            currency=currency,
            item_count=cart.item_count,
            expires_at=cart.expires_at,
        )
