"""Job handlers of the cart domain: cart expiry (API.md "Cart": guest carts live 30 days after their last change).

Imported by the cart router (so the server's runner knows it) and belongs in ``mercato/handlers.py`` for
``mercato worker`` processes.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import structlog

from mercato.cart import service
from mercato.platform import jobs

if TYPE_CHECKING:
    from mercato.platform.context import Services

log = structlog.get_logger("mercato.cart")


@jobs.handler(service.EXPIRE_JOB)
async def expire_cart(services: Services, payload: dict[str, Any]) -> None:
    """Delete the cart ``payload["cart_id"]`` if its ``expires_at`` has passed, else schedule this job again for
    the new ``expires_at`` (every change pushes it 30 days ahead). A cart already gone (emptied by sign-in merge,
    expired earlier) changes nothing; runs at least once, repeats are harmless."""
    async with services.db.session(write=True) as session:
        deleted = await service.expire_cart(session, uuid.UUID(payload["cart_id"]))
    if deleted:
        log.info("cart expired", cart_id=payload["cart_id"])
