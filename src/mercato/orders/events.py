"""Appending to an order's history (ARCHITECTURE.md: every state change of an order is an ``order_events`` row
written in the same transaction as the change; the order row is the projection of those events)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.orders import repository
from mercato.orders.models import Order, OrderEvent
from mercato.platform import clock


async def record(
    session: AsyncSession, order: Order, event_type: str, data: dict[str, Any], actor_id: uuid.UUID | None
) -> OrderEvent:
    """Append an event for a change already applied to ``order`` (its status after the change is recorded);
    bumps ``updated_at``. ``data`` holds the changed fields, JSON-safe. The caller holds the order's row lock."""
    now = clock.now()
    order.updated_at = now
    seq = await repository.last_event_seq(session, order.id) + 1
    event = append(session, order, event_type, data, actor_id, seq, now)
    await session.flush()
    return event


def append(
    session: AsyncSession,
    order: Order,
    event_type: str,
    data: dict[str, Any],
    actor_id: uuid.UUID | None,
    seq: int,
    at: datetime,
) -> OrderEvent:
    event = OrderEvent(
        id=clock.new_id(),
        order_id=order.id,
        seq=seq,
        type=event_type,
        status=order.status,
        data=data,
        actor_id=actor_id,
        created_at=at,
    )
    session.add(event)
    return event
