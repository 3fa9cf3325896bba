"""Background work of the cart domain: deleting expired carts (API.md "Cart": a cart lives 30 days after its last
change).

Imported by the cart router (so the server's runner knows it) and belongs in ``mercato/handlers.py`` for
``mercato worker`` processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from mercato.cart import service
from mercato.platform import clock, jobs

if TYPE_CHECKING:
    from mercato.platform.context import Services

log = structlog.get_logger("mercato.cart")


@jobs.periodic("cart.sweep", every=service.SWEEP_EVERY)
async def sweep_expired_carts(services: Services) -> None:
    """Delete every cart that has expired, :data:`~mercato.cart.service.SWEEP_BATCH` per write transaction (other
    writers get the database between batches). Every job runner runs it hourly; runs in two processes at once
    delete each cart once."""
    deleted = 0
    while True:
        async with services.db.session(write=True) as session:
            batch = await service.delete_expired(session, now=clock.now(), limit=service.SWEEP_BATCH)
        deleted += batch
        if batch < service.SWEEP_BATCH:
            break
    if deleted:
        log.info("carts expired", count=deleted)
