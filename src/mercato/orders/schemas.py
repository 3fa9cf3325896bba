"""Request and response bodies of the order endpoints (API.md "Orders").

Money in responses is a decimal string with two decimals; timestamps are RFC 3339 UTC.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import ConfigDict, EmailStr, Field, PlainSerializer

from mercato.identity.schemas import AddressCreate
from mercato.orders.models import Channel, OrderStatus, PaymentStatus, Priority
from mercato.schemas import RequestModel, ResponseModel

Money = Annotated[Decimal, PlainSerializer(lambda value: f"{value:.2f}", return_type=str)]
Quantity = Annotated[int, Field(ge=1, le=100, strict=True)]
Notes = Annotated[str, Field(max_length=2000)]

ADDRESS_EXAMPLE: dict[str, Any] = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "line1": "12 St James's Square",
    "line2": None,
    "city": "London",
    "region": None,
    "postal_code": "SW1Y 4JH",
    "country": "GB",
    "phone": None,
}
ORDER_EXAMPLE: dict[str, Any] = {
    "id": "01932c80-1111-7cc3-9d1e-3f6a2b1c0d9e",
    "number": "MC-000123",
    "user_id": "01932c6f-5a1e-7cc3-9d1e-3f6a2b1c0d9e",
    "status": "pending",
    "payment_status": "unpaid",
    "items": [
        {
            "id": "01932c80-2222-7cc3-9d1e-3f6a2b1c0d9e",
            "product_id": "01932c70-0000-7cc3-9d1e-3f6a2b1c0d9e",
            "variant_id": None,
            "name": "Essence Mascara Lash Princess",
            "sku": "BEA-ESS-ESS-001",
            "unit_price": "9.99",
            "quantity": 2,
            "line_total": "19.98",
        }
    ],
    "subtotal": "19.98",
    "discount_total": "2.00",
    "shipping_total": "0.00",
    "tax_total": "0.00",
    "total": "17.98",
    "currency": "USD",
    "coupon_code": "WELCOME10",
    "shipping_address": ADDRESS_EXAMPLE,
    "shipping_method": None,
    "tracking_number": None,
    "carrier": None,
    "channel": "web",
    "priority": "normal",
    "expected_delivery_date": None,
    "notes": "Leave at the door",
    "customer_name": "Ada Lovelace",
    "customer_email": "ada@example.com",
    "customer_phone": None,
    "cancel_reason": None,
    "reservation_expires_at": "2026-12-03T10:30:00Z",
    "created_at": "2026-12-03T10:00:00.123456Z",
    "updated_at": "2026-12-03T10:00:00.123456Z",
}


class OrderCreate(RequestModel):
    """``POST /orders``: the caller's cart becomes an order. Give a saved address (``shipping_address_id``,
    signed-in customers) or a ``shipping_address``; guests must give their ``email``."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {"shipping_address": ADDRESS_EXAMPLE, "notes": "Leave at the door", "email": "ada@example.com"}
            ]
        }
    )

    shipping_address_id: uuid.UUID | None = None
    shipping_address: AddressCreate | None = None
    shipping_method_id: uuid.UUID | None = None
    notes: Notes | None = None
    email: EmailStr | None = None


class OrderUpdate(RequestModel):
    """``PATCH /orders/{id}``: the customer's notes, while the order is pending."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"notes": "Please ring twice"}]}
    )

    notes: Notes | None = None


class ChannelCustomer(RequestModel):
    """Who ordered through another channel (source 002): a name and at least one way to reach them."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: EmailStr | None = None
    phone: Annotated[str, Field(min_length=3, max_length=40)] | None = None


class ChannelItem(RequestModel):
    """A line of a channel order."""

    product_id: uuid.UUID
    variant_id: uuid.UUID | None = None
    quantity: Quantity


class ChannelOrderCreate(RequestModel):
    """``POST /admin/orders``: an order taken on another channel by staff (source 002), for a customer with
    (``user_id``) or without an account."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer": {"name": "Grace Hopper", "phone": "+1 555 0100"},
                    "items": [{"product_id": "01932c70-0000-7cc3-9d1e-3f6a2b1c0d9e", "quantity": 1}],
                    "channel": "whatsapp",
                    "shipping_address": ADDRESS_EXAMPLE,
                    "expected_delivery_date": "2026-12-10",
                    "priority": "high",
                    "notes": "Gift wrap",
                }
            ]
        }
    )

    customer: ChannelCustomer
    user_id: uuid.UUID | None = None
    items: Annotated[list[ChannelItem], Field(min_length=1, max_length=100)]
    channel: Channel
    shipping_address: AddressCreate
    shipping_method_id: uuid.UUID | None = None
    expected_delivery_date: date | None = None
    priority: Priority = Priority.normal
    notes: Notes | None = None


class OrderItemRead(ResponseModel):
    """A line with its price snapshot."""

    id: uuid.UUID
    product_id: uuid.UUID
    variant_id: uuid.UUID | None
    name: str
    sku: str | None
    unit_price: Money
    quantity: int
    line_total: Money


class OrderRead(ResponseModel):
    """An order (API.md ``Order``)."""

    model_config = ResponseModel.model_config | ConfigDict(json_schema_extra={"examples": [ORDER_EXAMPLE]})

    id: uuid.UUID
    number: str
    user_id: uuid.UUID | None
    status: OrderStatus
    payment_status: PaymentStatus
    items: list[OrderItemRead]
    subtotal: Money
    discount_total: Money
    shipping_total: Money
    tax_total: Money
    total: Money
    currency: str
    coupon_code: str | None
    shipping_address: dict[str, Any] | None
    shipping_method: dict[str, Any] | None
    tracking_number: str | None
    carrier: str | None
    channel: Channel
    priority: Priority
    expected_delivery_date: date | None
    notes: str | None
    customer_name: str | None
    customer_email: str | None
    customer_phone: str | None
    cancel_reason: str | None
    reservation_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class OrderPlaced(OrderRead):
    """The placed order; a guest order also carries ``order_token`` — shown this once — which the guest sends
    as ``X-Order-Token`` to read and pay it."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={"examples": [ORDER_EXAMPLE | {"user_id": None, "order_token": "q3V9...Zx"}]}
    )

    order_token: str | None = None


class OrderEventRead(ResponseModel):
    """One entry of an order's history: ``status`` is the order's status after it; ``data`` the changed
    fields (the whole order for ``order.placed``). Who made it: ``actor_id`` (a user) or ``api_key_id`` (an API
    key, which belongs to no user); both null for the system (reservation expiry, refunds of cancelled orders)."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01932c80-3333-7cc3-9d1e-3f6a2b1c0d9e",
                    "type": "order.cancelled",
                    "status": "cancelled",
                    "data": {"cancel_reason": "customer"},
                    "actor_id": "01932c6f-5a1e-7cc3-9d1e-3f6a2b1c0d9e",
                    "api_key_id": None,
                    "created_at": "2026-12-03T10:05:00.654321Z",
                }
            ]
        }
    )

    id: uuid.UUID
    type: str
    status: OrderStatus
    data: dict[str, Any]
    actor_id: uuid.UUID | None = Field(description="The user who made the change; null for an API key or the system.")
    api_key_id: uuid.UUID | None = Field(
        description="The API key the change was made with (`GET /admin/api-keys`); null for users and the system."
    )
    created_at: datetime


# --- the admin workflow, tracking and the shipping address (API.md "Orders": status, verbs, tracking, shipping) ---

Carrier = Annotated[str, Field(min_length=1, max_length=100)]
TrackingNumber = Annotated[str, Field(min_length=1, max_length=100)]
StatusNote = Annotated[str, Field(min_length=1, max_length=500)]


class OrderStatusChange(RequestModel):
    """``PUT /orders/{id}/status`` (admins): move the order along its state machine — pending → processing →
    shipped → delivered → returned, pending/processing → cancelled. ``carrier`` and ``tracking_number`` belong to
    the move to ``shipped`` only; ``note`` is kept on the event and shown to the customer in tracking."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "shipped", "carrier": "DHL", "tracking_number": "JD014600006281230704", "note": None},
                {"status": "delivered", "note": "Left with the neighbour at no. 14"},
            ]
        }
    )

    status: OrderStatus
    carrier: Carrier | None = None
    tracking_number: TrackingNumber | None = None
    note: StatusNote | None = None


class OrderShip(RequestModel):
    """``POST /orders/{id}/ship`` (admins): the parcel left; carrier and tracking number are optional."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [{"carrier": "DHL", "tracking_number": "JD014600006281230704", "note": "2 parcels"}]
        }
    )

    carrier: Carrier | None = None
    tracking_number: TrackingNumber | None = None
    note: StatusNote | None = None


class OrderNote(RequestModel):
    """Optional body of ``POST /orders/{id}/confirm`` and ``/cancel``: a note kept on the event (and shown to the
    customer in tracking)."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={"examples": [{"note": "Cash on delivery agreed by phone"}]}
    )

    note: StatusNote | None = None


class TrackingEventRead(ResponseModel):
    """A step of the order's journey: the status it reached, when, and the staff note if any."""

    status: OrderStatus
    at: datetime
    note: str | None


class OrderTrackingRead(ResponseModel):
    """``GET /orders/{id}/tracking``: where the order is. ``estimated_delivery`` is the order's expected delivery
    date; ``events`` lists each status the order reached, oldest first."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "order_id": "01932c80-1111-7cc3-9d1e-3f6a2b1c0d9e",
                    "status": "shipped",
                    "carrier": "DHL",
                    "tracking_number": "JD014600006281230704",
                    "estimated_delivery": "2026-12-08",
                    "events": [
                        {"status": "pending", "at": "2026-12-03T10:00:00.123456Z", "note": None},
                        {"status": "processing", "at": "2026-12-03T10:01:12.000042Z", "note": None},
                        {"status": "shipped", "at": "2026-12-04T08:30:00.500000Z", "note": "2 parcels"},
                    ],
                }
            ]
        }
    )

    order_id: uuid.UUID
    status: OrderStatus
    carrier: str | None
    tracking_number: str | None
    estimated_delivery: date | None
    events: list[TrackingEventRead]


class OrderShippingRead(ResponseModel):
    """``GET /orders/{id}/shipping``: where the order goes and how (``method`` as chosen at placement)."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "address": ADDRESS_EXAMPLE,
                    "method": {"id": "01932c75-0000-7cc3-9d1e-3f6a2b1c0d9e", "name": "Standard", "carrier": "DHL"},
                    "carrier": "DHL",
                    "tracking_number": "JD014600006281230704",
                    "expected_delivery_date": "2026-12-08",
                }
            ]
        }
    )

    address: dict[str, Any] | None
    method: dict[str, Any] | None
    carrier: str | None
    tracking_number: str | None
    expected_delivery_date: date | None


class OrderShippingUpdate(RequestModel):
    """``PATCH /orders/{id}/shipping``: a new shipping address, checked like at placement, while the order is
    ``pending`` or ``processing``. The shipping method and the totals stay as placed."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {"shipping_address": ADDRESS_EXAMPLE | {"line1": "10 Downing Street", "postal_code": "SW1A 2AA"}}
            ]
        }
    )

    shipping_address: AddressCreate | None = None
