"""Job handlers of the inventory domain: the low-stock warning (API.md "Inventory", ``GET /inventory/low-stock``)
and the popularity recount when a sale leaves the 30-day window.

Imported by the inventory router (so the server's runner knows it) and belongs in ``mercato/handlers.py`` for
``mercato worker`` processes.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import structlog

from mercato.inventory import service
from mercato.inventory.service import LOW_STOCK_JOB, POPULARITY_JOB
from mercato.platform import jobs

if TYPE_CHECKING:
    from mercato.platform.context import Services

log = structlog.get_logger("mercato.inventory")


@jobs.handler(LOW_STOCK_JOB)
async def low_stock(services: Services, payload: dict[str, Any]) -> None:
    """Log a structured warning that a unit fell to or below its reorder point. ``payload``: ``product_id``,
    ``variant_id`` (None for a product without variants), ``sku``, ``available``, ``reorder_point``. Idempotent
    (a repeat only logs again); staff notifications will hook in here."""
    log.warning(
        "inventory.low_stock",
        product_id=payload.get("product_id"),
        variant_id=payload.get("variant_id"),
        sku=payload.get("sku"),
        available=payload.get("available"),
        reorder_point=payload.get("reorder_point"),
    )


@jobs.handler(POPULARITY_JOB)
async def recount_popularity(services: Services, payload: dict[str, Any]) -> None:
    """Recount ``units_sold_30d`` of ``payload["product_ids"]`` once a sale has left the 30-day window.
    Idempotent (a recount from the stock history)."""
    async with services.db.session(write=True) as session:
        await service.recount_sold(session, [uuid.UUID(value) for value in payload["product_ids"]])
