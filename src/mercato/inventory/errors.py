"""Inventory's problem types."""

from mercato.errors import Conflict


class InsufficientStock(Conflict):
    """Fewer units are available than asked for."""

    code = "insufficient-stock"
    title = "Not enough stock"
