"""Status emails to an order's customer (API.md "Events that notify": placed, paid, shipped, delivered, cancelled,
refunded). Each is queued in the caller's transaction, so it is sent only if the change commits."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.orders.models import Order
from mercato.platform.email import queue_email

#: What the customer is told when an order is cancelled, by the cancellation's reason.
CANCELLED = {
    "customer": "Your order has been cancelled as you asked.",
    "staff": "Your order has been cancelled.",
    "expired": "We did not receive the payment in time, so your order has been cancelled and its items released.",
}


def notify(session: AsyncSession, order: Order, headline: str, text: str, note: str | None = None) -> None:
    """Queue "Your order <number> <headline>" with ``text`` (and the shop's ``note``, if any) to the order's
    customer; orders without an email (some channel orders) get none."""
    if not order.customer_email:
        return
    body = f"Your order {order.number} {headline}.\n\n{text}\n"
    if note:
        body += f"\nNote from the shop: {note}\n"
    queue_email(session, to=order.customer_email, subject=f"Your order {order.number} {headline}", text=body)
