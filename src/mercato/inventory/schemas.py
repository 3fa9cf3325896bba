"""Request and response bodies of the inventory endpoints (API.md "Inventory")."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field

from mercato.schemas import RequestModel, ResponseModel

#: On-hand counts and reorder points a request may set (the catalog's product stock has the same ceiling).
OnHand = Annotated[int, Field(ge=0, le=10_000_000, examples=[25])]
Delta = Annotated[int, Field(ge=-10_000_000, le=10_000_000, examples=[-3])]
Reason = Annotated[str, Field(min_length=1, max_length=200, examples=["cycle count"])]

_PRODUCT = "0193a5c2-7d41-7c3e-9a53-1f0e8b2d4c11"
_VARIANT = "0193a5c2-7d41-7c3e-9a53-1f0e8b2d4c12"


class InventoryRead(ResponseModel):
    """Stock of one sellable unit: a product without variants (``variant_id`` null) or one variant.

    ``available = on_hand - reserved``; ``low_stock`` is true when ``available <= reorder_point`` (so a sold-out
    unit with the default reorder point 0 is low). ``name`` is the product's name, or ``"product – variant"`` for a
    variant.
    """

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "product_id": _PRODUCT,
                    "variant_id": _VARIANT,
                    "sku": "TEE-BLK-M",
                    "name": "Monospace Tee – Black / M",
                    "on_hand": 12,
                    "reserved": 2,
                    "available": 10,
                    "reorder_point": 5,
                    "low_stock": False,
                }
            ]
        }
    )

    product_id: uuid.UUID
    variant_id: uuid.UUID | None
    sku: str | None
    name: str
    on_hand: int
    reserved: int
    available: int
    reorder_point: int
    low_stock: bool


class StockSet(RequestModel):
    """``PUT /inventory/{product_id}``: set the on-hand count (and optionally the reorder point) of the product,
    or of one of its variants (``variant_id`` is required for a product with variants)."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {"on_hand": 40, "reorder_point": 5, "reason": "cycle count"},
                {"on_hand": 12, "variant_id": _VARIANT, "reason": "delivery from supplier"},
            ]
        }
    )

    on_hand: OnHand
    variant_id: uuid.UUID | None = None
    reorder_point: OnHand | None = None
    reason: Reason


class StockAdjust(RequestModel):
    """``POST /inventory/adjust`` (and one item of a batch): move the on-hand count by ``delta`` (non-zero;
    negative removes units). A result below zero, or below the units already reserved, is refused (409)."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {"product_id": _PRODUCT, "delta": -2, "reason": "damaged in storage"},
                {"product_id": _PRODUCT, "variant_id": _VARIANT, "delta": 24, "reason": "delivery"},
            ]
        }
    )

    product_id: uuid.UUID
    variant_id: uuid.UUID | None = None
    delta: Delta
    reason: Reason


class StockBatch(RequestModel):
    """``POST /inventory/batch``: 1–500 adjustments applied all-or-nothing."""

    model_config = RequestModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "adjustments": [
                        {"product_id": _PRODUCT, "delta": 10, "reason": "delivery"},
                        {"product_id": _PRODUCT, "variant_id": _VARIANT, "delta": -1, "reason": "damaged"},
                    ]
                }
            ]
        }
    )

    adjustments: list[StockAdjust] = Field(min_length=1, max_length=500)


class BatchResult(ResponseModel):
    """The outcome of a successful batch: ``reference`` (stored on every history row it wrote) and each
    adjusted unit's stock after the whole batch, in request order."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "reference": "batch-0193a5c2-7d41-7c3e-9a53-1f0e8b2d4c99",
                    "results": [
                        {
                            "product_id": _PRODUCT,
                            "variant_id": None,
                            "sku": "MUG-1",
                            "name": "Mug",
                            "on_hand": 30,
                            "reserved": 0,
                            "available": 30,
                            "reorder_point": 5,
                            "low_stock": False,
                        }
                    ],
                }
            ]
        }
    )

    reference: str
    results: list[InventoryRead]


class HistoryRead(ResponseModel):
    """One stock change: ``delta`` moved on hand and ``reserved_delta`` the reservations; ``on_hand_after`` and
    ``reserved_after`` are the unit's counts right after it. ``reason`` says why (``order.placed``, a staff
    member's words...), ``reference`` what caused it (an order number, a batch), ``actor_id`` who (null: the
    system). ``created_at`` is UTC."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0193a5c2-7d41-7c3e-9a53-1f0e8b2d4c77",
                    "product_id": _PRODUCT,
                    "variant_id": None,
                    "delta": -2,
                    "reserved_delta": 0,
                    "on_hand_after": 38,
                    "reserved_after": 1,
                    "reason": "damaged in storage",
                    "reference": None,
                    "actor_id": "0193a5c2-7d41-7c3e-9a53-1f0e8b2d4c55",
                    "created_at": "2026-12-03T05:20:00Z",
                }
            ]
        }
    )

    id: uuid.UUID
    product_id: uuid.UUID
    variant_id: uuid.UUID | None
    delta: int
    reserved_delta: int
    on_hand_after: int
    reserved_after: int
    reason: str
    reference: str | None
    actor_id: uuid.UUID | None
    created_at: datetime
