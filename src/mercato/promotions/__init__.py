"""Coupons: percentage and fixed discounts with validity windows, usage limits and redemptions."""
