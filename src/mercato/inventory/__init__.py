"""Stock levels (on hand, reserved, available) per product and per variant, and their history."""
