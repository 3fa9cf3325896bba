"""Orders: placement from the cart, line snapshots, the state machine and the order event history."""
