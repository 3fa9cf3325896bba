"""Job handlers of the payments domain: reconciliation of attempts and refunds left pending (a crash or timeout
between the gateway's answer and our record) and the refund of a cancelled paid order."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from mercato.orders.money import REFUND_CANCELLED_JOB
from mercato.payments import service
from mercato.payments.gateways.base import GatewayUnavailable
from mercato.platform import jobs

if TYPE_CHECKING:
    from mercato.platform.context import Services


@jobs.handler(service.RECONCILE_JOB)
async def reconcile(services: Services, payload: dict[str, Any]) -> None:
    """Settle the payment ``payload["payment_id"]`` or the refund ``payload["refund_id"]`` from what the gateway
    says. Runs at least once; repeats change nothing; a gateway that does not answer, or has not decided a
    refund yet, makes the job retry."""
    if "payment_id" in payload:
        await service.reconcile_payment(services, uuid.UUID(payload["payment_id"]))
    if "refund_id" in payload:
        done = await service.reconcile_refund(services, uuid.UUID(payload["refund_id"]))
        if done == "pending":  # the gateway has not decided yet: keep the job, ask again later (backoff)
            raise GatewayUnavailable(f"Refund {payload['refund_id']} is still pending at the gateway.")


@jobs.handler(REFUND_CANCELLED_JOB)
async def refund_cancelled_order(services: Services, payload: dict[str, Any]) -> None:
    """Refund what the payment of the cancelled order ``payload["order_id"]`` still holds."""
    await service.refund_cancelled_order(services, uuid.UUID(payload["order_id"]))
