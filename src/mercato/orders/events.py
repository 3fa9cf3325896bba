"""Appending to an order's history (ARCHITECTURE.md: every state change of an order is an ``order_events`` row
written in the same transaction as the change; the order row is the projection of those events)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.orders import repository
from mercato.orders.models import Order, OrderEvent
from mercato.platform import clock, request_context


async def record(
    session: AsyncSession,
    order: Order,
    event_type: str,
    data: dict[str, Any],
    actor_id: uuid.UUID | None,
    *,
    api_key_id: uuid.UUID | None = None,
) -> OrderEvent:
    """Append an event for a change already applied to ``order`` (its status after the change is recorded);
    bumps ``updated_at``. ``data`` holds the changed fields, JSON-safe; ``actor_id`` / ``api_key_id`` as
    :func:`append`. The caller holds the order's row lock."""
    now = clock.now()
    order.updated_at = now
    seq = await repository.last_event_seq(session, order.id) + 1
    event = append(session, order, event_type, data, actor_id, seq, now, api_key_id=api_key_id)
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
    *,
    api_key_id: uuid.UUID | None = None,
) -> OrderEvent:
    """Add the order's ``seq``-th event, made at ``at``, to the session.

    Args:
        actor_id: the user who made the change (None for an API key, a guest or the system).
        api_key_id: the API key the change was made with; by default the one the current request was sent with
            (:mod:`mercato.platform.request_context`, None outside a request: jobs act for no key). Given when
            the change finishes what an earlier request with a key asked for (a refund the gateway decided later).
    """
    event = OrderEvent(
        id=clock.new_id(),
        order_id=order.id,
        seq=seq,
        type=event_type,
        status=order.status,
        data=data,
        actor_id=actor_id,
        api_key_id=api_key_id or request_context.current.get().api_key_id,
        created_at=at,
    )
    session.add(event)
    return event
