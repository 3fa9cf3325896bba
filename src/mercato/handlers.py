"""Imports every domain's job handlers so that any process running jobs (the server's runner, ``mercato
worker``) knows them all, whatever else it imported."""

from mercato.cart import handlers as cart_handlers
from mercato.inventory import handlers as inventory_handlers
from mercato.orders import handlers as order_handlers
from mercato.payments import handlers as payment_handlers
from mercato.platform import email

__all__ = ["cart_handlers", "email", "inventory_handlers", "order_handlers", "payment_handlers"]
