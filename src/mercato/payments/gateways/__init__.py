"""Choosing a gateway: new payments go through ``MERCATO_PAYMENT_GATEWAY`` (``test`` by default, ``stripe`` with
the ``stripe`` extra); refunds and reconciliation go through the gateway that took the payment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mercato.errors import ServiceUnavailable
from mercato.payments.gateways.base import Gateway
from mercato.platform.keys import derived_secret

if TYPE_CHECKING:
    from mercato.platform.context import Services

_cache: dict[tuple[int, str], Gateway] = {}


def active(services: Services) -> Gateway:
    """The gateway that takes new payments and saves cards."""
    return by_name(services, services.settings.payment_gateway)


def by_name(services: Services, name: str) -> Gateway:
    """The gateway ``name`` (``test`` or ``stripe``) configured for ``services``.

    Raises:
        ServiceUnavailable: ``name`` is not configured here (a ``test`` payment on a store that now uses Stripe
            can still be refunded only while the test gateway is enabled: it is, whenever it is the active one).
    """
    key = (id(services), name)
    if key in _cache:
        return _cache[key]
    settings = services.settings
    gateway: Gateway
    if name == "test" and settings.payment_gateway == "test":
        from mercato.payments.gateways.test import TestGateway

        gateway = TestGateway(
            services.db,
            derived_secret(settings.secret, "test-gateway-webhooks"),
            delay=settings.test_gateway_delay,
            hold=settings.test_gateway_hold,
        )
    elif name == "stripe" and settings.stripe_api_key is not None:
        from mercato.payments.gateways.stripe import StripeGateway

        webhook_secret = settings.stripe_webhook_secret
        gateway = StripeGateway(
            settings.stripe_api_key.get_secret_value(),
            webhook_secret.get_secret_value() if webhook_secret is not None else "",
        )
    else:
        raise ServiceUnavailable(f"The payment gateway {name!r} is not configured on this server.")
    _cache[key] = gateway
    return gateway
