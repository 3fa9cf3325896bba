"""Job handlers of the orders domain: reservation expiry (``MERCATO_RESERVATION_TTL``, API.md "Inventory")."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import structlog

from mercato.orders import service
from mercato.payments import service as payments
from mercato.platform import jobs

if TYPE_CHECKING:
    from mercato.platform.context import Services

log = structlog.get_logger("mercato.orders")


@jobs.handler(service.EXPIRE_JOB)
async def expire_reservation(services: Services, payload: dict[str, Any]) -> None:
    """Cancel the order ``payload["order_id"]`` with reason ``expired`` if it is still unpaid and its reservation
    has passed (the order releases its stock and coupon use) — unless a payment of it is still waiting for the
    gateway: then the job is scheduled again for later. Runs at least once; repeats change nothing."""
    async with services.db.session(write=True) as session:
        expired = await service.expire_order(
            session, uuid.UUID(payload["order_id"]), payment_in_flight=payments.payment_in_flight
        )
    if expired:
        log.info("order reservation expired", order_id=payload["order_id"])
