"""The payment gateway interface (ARCHITECTURE.md: gateways plug in behind one interface; API.md "Payments").

A gateway charges (authorise + capture in one call, as a web shop does when it ships from stock), refunds, tells
what became of a charge or refund it was asked for (reconciliation after a crash or timeout), verifies the
signature of its callbacks and turns a client-side card token into the card's public details.

Every call that moves money takes an idempotency ``key`` (our payment or refund id): asking twice with the same
key never charges or refunds twice (so a pending refund is finished by asking again with its key), and
:meth:`Gateway.find_charge` looks a charge up by its key.
Amounts are ``Decimal`` in major units (e.g. ``Decimal("19.99")``) with an ISO 4217 ``currency``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from mercato.errors import DomainError, ServiceUnavailable, ValidationFailed


@dataclass(frozen=True)
class Card:
    """What may be shown and stored about a card: brand, last four digits and expiry — never the number or CVC.
    ``token`` is the gateway's reusable reference to it (kept encrypted when saved)."""

    brand: str
    last4: str
    exp_month: int
    exp_year: int
    token: str


@dataclass(frozen=True)
class Outcome:
    """A gateway's answer about a charge or refund: ``succeeded`` or ``failed`` (with ``failure_reason``, e.g.
    ``card_declined`` or ``insufficient_funds``), or ``pending`` when the gateway took it but has not decided yet
    (Stripe: a PaymentIntent ``processing``, a Refund ``pending``; it is settled later by asking again, from the
    reconcile job or a webhook); ``reference`` is the gateway's id for it."""

    status: Literal["succeeded", "failed", "pending"]
    reference: str | None
    amount: Decimal
    failure_reason: str | None = None


@dataclass(frozen=True)
class Notification:
    """A verified gateway callback: ``event_id`` (unique per gateway), ``type`` (``charge.succeeded``,
    ``charge.failed``, ``charge.refunded``...), the ``key`` (our payment id) the event is about when known and
    the gateway ``reference``."""

    event_id: str
    type: str
    key: str | None
    reference: str | None
    data: Mapping[str, Any] = field(default_factory=dict)


class UnknownToken(ValidationFailed):
    """The payment token is not one the gateway knows (API.md: unknown token → 422)."""

    def __init__(self, detail: str = "Unknown payment token.") -> None:
        super().__init__(detail, field="payment_token")


class GatewayUnavailable(ServiceUnavailable):
    """The gateway did not answer in time or failed; the order stays payable (503, ``Retry-After``)."""

    title = "Payment gateway unavailable"


class InvalidSignature(DomainError):
    """A webhook without a valid signature, or signed too long ago (replays older than 5 minutes)."""

    status = 401
    code = "invalid-signature"
    title = "Invalid webhook signature"


class MalformedWebhook(DomainError):
    """A webhook body or signature header that cannot be parsed."""

    status = 400
    code = "bad-request"
    title = "Malformed webhook"


#: Webhooks signed longer ago than this are refused as replays (seconds; Stripe's default tolerance).
WEBHOOK_TOLERANCE = 300


class Gateway(Protocol):
    """What Mercato needs from a payment gateway; see the module docstring for the idempotency contract."""

    name: str
    #: Seconds after an attempt during which :meth:`find_charge` may not see it yet (0 for an immediate
    #: lookup; Stripe's search index lags): reconciliation asks again later rather than concluding "never charged".
    lookup_lag: float

    async def card(self, token: str, *, key: str | None = None) -> Card:
        """The card behind a client-side ``token``; ``key`` makes resolving it idempotent (the same payment
        request resolves the same token to the same reusable card). Raises :class:`UnknownToken`."""

    async def save(self, token: str) -> Card:
        """Make the card behind ``token`` reusable for later payments (a saved method); the returned
        ``Card.token`` is what :meth:`charge` takes then. Raises :class:`UnknownToken`."""

    async def charge(self, *, key: str, amount: Decimal, currency: str, token: str) -> Outcome:
        """Authorise and capture ``amount`` on ``token``. A decline is an :class:`Outcome` with status
        ``failed``, not an exception. Raises :class:`UnknownToken`, :class:`GatewayUnavailable`."""

    async def refund(self, *, key: str, reference: str, amount: Decimal, currency: str) -> Outcome:
        """Give ``amount`` of the charge ``reference`` back. Raises :class:`GatewayUnavailable`."""

    async def find_charge(self, key: str, *, reference: str | None = None) -> Outcome | None:
        """What became of the charge asked for with ``key`` (None: the gateway never took it); ``reference`` is
        the gateway's id for it when known (it answered ``pending``), which a gateway may look up directly."""

    async def find_refund(self, reference: str) -> Outcome:
        """What the refund ``reference`` (the gateway's id, from a ``pending`` :meth:`refund` answer) is now:
        ``pending`` until the gateway decides. Raises :class:`GatewayUnavailable`."""

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> Notification:
        """Check a callback's signature and age and parse it.

        Raises:
            MalformedWebhook: unparsable body or signature header (400).
            InvalidSignature: wrong signature, or signed more than :data:`WEBHOOK_TOLERANCE` seconds from ``now``.
        """
