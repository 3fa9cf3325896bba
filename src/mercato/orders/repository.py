"""Every order query, including the row lock taken before a status change."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, case, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mercato.db.queries import Paged, paged
from mercato.orders.models import Order, OrderEvent, OrderItem, Priority
from mercato.orders.rules import OPEN_STATUSES, UNFINISHED_STATUSES

PRIORITY_RANK = {str(Priority.urgent): 0, str(Priority.high): 1, str(Priority.normal): 2, str(Priority.low): 3}


@dataclass(frozen=True)
class OrderFilter:
    """Filters of the order listings; ``created_from``/``created_to`` bound ``created_at`` (UTC, inclusive)."""

    user_id: uuid.UUID | None = None
    status: str | None = None
    channel: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    q: str | None = None


_NEXT_SEQ = select(func.coalesce(func.max(Order.seq), 0) + 1)
_NEXTVAL = text("SELECT nextval('order_number_seq')")


async def next_seq(session: AsyncSession) -> int:
    """The next order sequence number: PostgreSQL's ``order_number_seq``; on SQLite ``max(seq) + 1``, safe
    because SQLite write transactions are serialised (``BEGIN IMMEDIATE``)."""
    if session.get_bind().dialect.name == "postgresql":
        return int(await session.scalar(_NEXTVAL) or 0)
    return int(await session.scalar(_NEXT_SEQ) or 1)


async def order(session: AsyncSession, order_id: uuid.UUID, *, lock: bool = False) -> Order | None:
    """The order with its items; ``lock`` takes its row lock (``FOR UPDATE`` on PostgreSQL) for a change."""
    query = select(Order).where(Order.id == order_id).options(selectinload(Order.items))
    if lock:  # and refresh what an earlier read of this session put in the identity map
        query = query.with_for_update(of=Order).execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


def _filtered(filters: OrderFilter) -> Select[Any]:
    query = select(Order).options(selectinload(Order.items))
    if filters.user_id is not None:
        query = query.where(Order.user_id == filters.user_id)
    if filters.status is not None:
        query = query.where(Order.status == filters.status)
    if filters.channel is not None:
        query = query.where(Order.channel == filters.channel)
    if filters.created_from is not None:
        query = query.where(Order.created_at >= filters.created_from)
    if filters.created_to is not None:
        query = query.where(Order.created_at <= filters.created_to)
    if filters.q:
        pattern = "%" + filters.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                func.lower(Order.number).like(pattern, escape="\\"),
                func.lower(Order.customer_email).like(pattern, escape="\\"),
                func.lower(Order.customer_name).like(pattern, escape="\\"),
            )
        )
    return query


async def list_orders(session: AsyncSession, filters: OrderFilter, *, page: int, limit: int) -> Paged[Order]:
    """Orders matching ``filters``, newest first."""
    query = _filtered(filters).order_by(Order.created_at.desc(), Order.id.desc())
    return await paged(session, query, page=page, limit=limit)


async def priority_orders(session: AsyncSession, *, page: int, limit: int) -> Paged[Order]:
    """Open orders (pending, processing) by ``expected_delivery_date`` (soonest first, undated last), then
    priority (urgent first) and age (source 002)."""
    rank = case(PRIORITY_RANK, value=Order.priority, else_=len(PRIORITY_RANK))
    query = (
        select(Order)
        .options(selectinload(Order.items))
        .where(Order.status.in_([str(status) for status in OPEN_STATUSES]))
        .order_by(Order.expected_delivery_date.is_(None), Order.expected_delivery_date, rank, Order.created_at)
    )
    return await paged(session, query, page=page, limit=limit)


async def unfinished_with_variant(
    session: AsyncSession, product_id: uuid.UUID, variant_id: uuid.UUID, *, limit: int
) -> list[str]:
    """Numbers (at most ``limit``, in order) of unfinished orders with a line of the variant. The lines are found
    through the indexed ``product_id``."""
    query = (
        select(Order.number)
        .join(OrderItem, OrderItem.order_id == Order.id)
        .where(
            OrderItem.product_id == product_id,
            OrderItem.variant_id == variant_id,
            Order.status.in_([str(status) for status in UNFINISHED_STATUSES]),
        )
        .distinct()
        .order_by(Order.number)
        .limit(limit)
    )
    return list(await session.scalars(query))


async def events(session: AsyncSession, order_id: uuid.UUID, *, until: datetime | None = None) -> Sequence[OrderEvent]:
    """The order's events, oldest first; only those at or before ``until`` when given."""
    query = select(OrderEvent).where(OrderEvent.order_id == order_id)
    if until is not None:
        query = query.where(OrderEvent.created_at <= until)
    return (await session.execute(query.order_by(OrderEvent.seq))).scalars().all()


async def paged_events(session: AsyncSession, order_id: uuid.UUID, *, page: int, limit: int) -> Paged[OrderEvent]:
    """A page of the order's events, oldest first."""
    query = select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.seq)
    return await paged(session, query, page=page, limit=limit)


async def last_event_seq(session: AsyncSession, order_id: uuid.UUID) -> int:
    """The ``seq`` of the order's newest event (0 when it has none)."""
    query = select(func.coalesce(func.max(OrderEvent.seq), 0)).where(OrderEvent.order_id == order_id)
    return int(await session.scalar(query) or 0)


async def money_positions(session: AsyncSession) -> list[tuple[uuid.UUID, str, Decimal, str]]:
    """``(id, number, total, payment_status)`` of every order."""
    rows = await session.execute(select(Order.id, Order.number, Order.total, Order.payment_status))
    return [tuple(row) for row in rows]  # type: ignore[misc]
