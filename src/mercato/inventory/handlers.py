"""Job handlers of the inventory domain: the low-stock warning (API.md "Inventory", ``GET /inventory/low-stock``).

Imported by the inventory router (so the server's runner knows it) and belongs in ``mercato/handlers.py`` for
``mercato worker`` processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from mercato.inventory.service import LOW_STOCK_JOB
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
