"""Payment problem types (API.md §1 slugs)."""

from mercato.errors import Conflict, DomainError, NotFound, ValidationFailed


class PaymentDeclined(DomainError):
    """The gateway declined the charge (API.md: 402 ``payment-declined``); the failed attempt is recorded and the
    order stays payable. ``reason`` is the gateway's (``card_declined``, ``insufficient_funds``...)."""

    status = 402
    code = "payment-declined"
    title = "Payment declined"


class PaymentNotFound(NotFound):
    """No such payment, or not the caller's."""

    title = "Payment not found"


class PaymentMethodNotFound(NotFound):
    """No such saved payment method among the caller's."""

    title = "Payment method not found"


class PaymentInProgress(Conflict):
    """Another payment of the same order is being processed right now; retry when it has finished."""

    title = "Payment in progress"


class RefundNotAllowed(ValidationFailed):
    """A refund the rules refuse: more than captured − refunded, nothing captured, restock twice (422)."""


class RefundFailed(Conflict):
    """The gateway refused the refund (e.g. the charge was disputed); nothing changed on the order."""

    title = "Refund failed"
