"""Shipping and tax: shipping methods with weight-based rates, free-over thresholds, delivery windows in business
days and the countries they ship to; the admin tax-rate table; quotes for the cart and the order."""
