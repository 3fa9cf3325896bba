"""Cart's problem types (API.md "Cart")."""

from mercato.errors import NotFound


class CartItemNotFound(NotFound):
    """No line with that id in the caller's cart (another customer's line ids are 404 too, never their data)."""

    title = "Cart item not found"
