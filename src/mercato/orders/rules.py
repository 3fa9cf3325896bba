"""Pure order rules: the state machine, human order numbers and order-token hashing (API.md "Orders")."""

from __future__ import annotations

import hashlib

from mercato.orders.models import OrderStatus

#: Allowed status moves (API.md "Orders", ``PUT /orders/{id}/status``): pending → processing → shipped →
#: delivered; pending/processing → cancelled; delivered → returned. Anything else is ``invalid-transition``.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.pending: frozenset({OrderStatus.processing, OrderStatus.cancelled}),
    OrderStatus.processing: frozenset({OrderStatus.shipped, OrderStatus.cancelled}),
    OrderStatus.shipped: frozenset({OrderStatus.delivered}),
    OrderStatus.delivered: frozenset({OrderStatus.returned}),
    OrderStatus.cancelled: frozenset(),
    OrderStatus.returned: frozenset(),
}

#: States of an order still being worked on (source 002's priority list).
OPEN_STATUSES = (OrderStatus.pending, OrderStatus.processing)

#: States of an order not yet finished: it may still be paid, cancelled (its units go back to stock) or shipped,
#: so the products and variants of its lines must stay. Delivered, cancelled and returned orders are finished.
UNFINISHED_STATUSES = (OrderStatus.pending, OrderStatus.processing, OrderStatus.shipped)


def can_move(current: str, target: str) -> bool:
    """True when ``current → target`` is an allowed move."""
    return OrderStatus(target) in TRANSITIONS[OrderStatus(current)]


def order_number(seq: int) -> str:
    """The human order number of the ``seq``-th order: ``MC-000123`` (six digits at least, more when needed)."""
    return f"MC-{seq:06d}"


def token_hash(token: str) -> str:
    """SHA-256 hex digest of a guest's order token: the database keeps only this, so a leak reveals no token."""
    return hashlib.sha256(token.encode()).hexdigest()
