"""Guest and user carts, and the one pricing function that the cart and the order share (``rules``)."""
