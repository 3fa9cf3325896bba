"""Shipping's problem types. Refusals of a destination or of a method named in a request body are plain
``validation-error`` 422s (:class:`mercato.errors.ValidationFailed`) naming the field."""

from __future__ import annotations

from mercato.errors import NotFound


class ShippingMethodNotFound(NotFound):
    """No shipping method has this id (``PATCH``/``DELETE /shipping/methods/{id}``)."""

    title = "Shipping method not found"
