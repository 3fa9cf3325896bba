"""Order problem types (API.md §1 slugs)."""

from mercato.errors import Conflict, NotFound


class OrderNotFound(NotFound):
    """No such order, or the caller may not see it (another customer's order, a wrong order token)."""

    title = "Order not found"


class InvalidTransition(Conflict):
    """The order's state machine does not allow this move (API.md "Orders": allowed moves)."""

    code = "invalid-transition"
    title = "Invalid status transition"
