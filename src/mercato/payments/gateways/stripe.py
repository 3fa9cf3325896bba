"""A Stripe-shaped gateway (``MERCATO_PAYMENT_GATEWAY=stripe``; install ``mercato[stripe]``), built on Stripe's
official Python library (``stripe``): PaymentIntents with automatic capture, Refunds, PaymentMethods for saved
cards, and ``Stripe-Signature`` webhooks verified by ``stripe.Webhook`` (5-minute tolerance).

Our attempt id travels as Stripe's ``Idempotency-Key`` and as ``metadata[mercato_key]``, so a retry never
charges twice and reconciliation finds the PaymentIntent with the Search API. Amounts go to Stripe in minor units.
The HTTP client is injectable (tests replay recorded responses; no network).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import stripe

from mercato.payments.gateways.base import (
    WEBHOOK_TOLERANCE,
    Card,
    GatewayUnavailable,
    InvalidSignature,
    MalformedWebhook,
    Notification,
    Outcome,
    UnknownToken,
)

#: PaymentIntent states that are final (others — processing, requires_action — are not decided yet).
_FINAL = {"succeeded": "succeeded", "canceled": "failed", "requires_payment_method": "failed"}
#: ``failure_reason`` of a charge the card's bank wanted to authenticate (3-D Secure): this API has no redirect
#: flow to complete it, so the PaymentIntent is cancelled at Stripe (it can never capture later).
AUTHENTICATION_REQUIRED = "authentication_required"
#: Stripe webhook types → ours (``charge.*`` reconcile a payment, ``refund.*`` a refund).
_EVENTS = {
    "payment_intent.succeeded": "charge.succeeded",
    "payment_intent.payment_failed": "charge.failed",
    "refund.created": "refund.updated",
    "refund.updated": "refund.updated",
    "refund.failed": "refund.updated",
    "charge.refund.updated": "refund.updated",
}
#: Refund states Stripe has not decided yet (the refund is recorded ``pending`` and looked up again later).
_REFUND_UNDECIDED = ("pending", "requires_action")


def _minor(amount: Decimal) -> int:
    return int(amount * 100)


def _major(amount: int) -> Decimal:
    return (Decimal(amount) / 100).quantize(Decimal("0.01"))


class StripeGateway:
    """Stripe behind :class:`~mercato.payments.gateways.base.Gateway`.

    Args:
        api_key: the secret API key (``sk_...``; from ``MERCATO_STRIPE_API_KEY``, never logged).
        webhook_secret: the endpoint's signing secret (``whsec_...``).
        http_client: a ``stripe.HTTPClient`` (default: the library's HTTPX client).
    """

    name = "stripe"
    #: Stripe's Search API is eventually consistent ("up to a minute"); give it five before concluding.
    lookup_lag = 300.0

    def __init__(self, api_key: str, webhook_secret: str, *, http_client: stripe.HTTPClient | None = None) -> None:
        self.webhook_secret = webhook_secret
        self.client = stripe.StripeClient(
            api_key, http_client=http_client or stripe.HTTPXClient(), max_network_retries=2
        )

    async def card(self, token: str, *, key: str | None = None) -> Card:
        """Turn a client-side token (``tok_...``) or PaymentMethod id (``pm_...``) into a reusable PaymentMethod.

        Args:
            token: the client-side token or PaymentMethod id.
            key: Stripe's ``Idempotency-Key`` for creating the PaymentMethod from a ``tok_...`` (a token can be
                used once only: a retry of the same payment must get the same PaymentMethod back, not a
                "token already used" error nor a new PaymentMethod that Stripe's idempotency on the
                PaymentIntent would refuse). None: no key (a one-off, e.g. saving a card).

        Raises:
            UnknownToken: Stripe does not know the token, or it is not a card. GatewayUnavailable: no answer.
        """
        try:
            if token.startswith("pm_"):
                method = await self.client.v1.payment_methods.retrieve_async(token)
            else:
                method = await self.client.v1.payment_methods.create_async(
                    params={"type": "card", "card": {"token": token}},
                    options={"idempotency_key": key} if key is not None else {},
                )
        except stripe.InvalidRequestError as exc:
            raise UnknownToken(f"Stripe does not know this payment token ({exc.code}).") from exc
        except stripe.StripeError as exc:
            raise GatewayUnavailable(f"Stripe did not answer ({type(exc).__name__}).") from exc
        card = method.card
        if card is None:
            raise UnknownToken("This payment method is not a card.")
        return Card(card.brand, card.last4, card.exp_month, card.exp_year, method.id)

    async def save(self, token: str) -> Card:
        """A PaymentMethod attached to a new Customer (Stripe charges an unattached PaymentMethod only once);
        the saved token is ``<customer id>/<payment method id>``."""
        card = await self.card(token)
        try:
            customer = await self.client.v1.customers.create_async(params={"payment_method": card.token})
        except stripe.InvalidRequestError as exc:
            raise UnknownToken(f"Stripe refused to save this card ({exc.code}).") from exc
        except stripe.StripeError as exc:
            raise GatewayUnavailable(f"Stripe did not answer ({type(exc).__name__}).") from exc
        return Card(card.brand, card.last4, card.exp_month, card.exp_year, f"{customer.id}/{card.token}")

    async def charge(self, *, key: str, amount: Decimal, currency: str, token: str) -> Outcome:
        """Create and confirm a PaymentIntent (automatic capture).

        Returns:
            ``succeeded``; ``failed`` for a decline (Stripe's decline code as reason) or a PaymentIntent that
            ``requires_action`` (3-D Secure: cancelled at Stripe, reason ``authentication_required``); ``pending``
            for one still ``processing`` (Stripe decides later; :meth:`find_charge` tells then).

        Raises:
            UnknownToken: Stripe refused the payment method. GatewayUnavailable: no answer, or the cancel of a
                ``requires_action`` PaymentIntent did not go through (the reconcile job cancels it then).
        """
        params: dict[str, Any] = {
            "amount": _minor(amount),
            "currency": currency.lower(),
            "confirm": True,
            "metadata": {"mercato_key": key},
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        }
        if "/" in token:  # a saved card: its customer and payment method
            params["customer"], params["payment_method"] = token.split("/", 1)
        elif token.startswith("pm_"):
            params["payment_method"] = token
        else:
            params["payment_method_data"] = {"type": "card", "card": {"token": token}}
        try:
            intent = await self.client.v1.payment_intents.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": key},
            )
        except stripe.CardError as exc:
            reason = (exc.error.decline_code if exc.error else None) or exc.code or "card_declined"
            reference = None
            if exc.error is not None and exc.error.payment_intent is not None:
                reference = exc.error.payment_intent.id
            return Outcome("failed", reference, amount, reason)
        except stripe.InvalidRequestError as exc:
            raise UnknownToken(f"Stripe refused the payment method ({exc.code}).") from exc
        except stripe.StripeError as exc:
            raise GatewayUnavailable(f"Stripe did not answer ({type(exc).__name__}).") from exc
        if intent.status == "processing":
            return Outcome("pending", intent.id, amount)
        if intent.status == "requires_action":
            return await self._abandon(intent)
        return self._intent_outcome(intent) or Outcome("failed", intent.id, amount, intent.status)

    async def _abandon(self, intent: Any) -> Outcome:
        """Cancel a PaymentIntent that ``requires_action`` (no redirect flow here to authenticate it), so it can
        never capture later: a failed :class:`Outcome` (``authentication_required``). One that cannot be cancelled
        any more (cancelled already, or decided meanwhile) is read back and reported as it is.

        Raises:
            GatewayUnavailable: Stripe did not answer, or the PaymentIntent is still undecided.
        """
        try:
            try:
                intent = await self.client.v1.payment_intents.cancel_async(
                    intent.id, params={"cancellation_reason": "abandoned"}
                )
            except stripe.InvalidRequestError:  # not cancelable (any more): see what it is now
                intent = await self.client.v1.payment_intents.retrieve_async(intent.id)
        except stripe.StripeError as exc:
            raise GatewayUnavailable(f"Stripe did not answer ({type(exc).__name__}).") from exc
        if intent.status == "canceled":
            return Outcome("failed", intent.id, _major(intent.amount), AUTHENTICATION_REQUIRED)
        outcome = self._intent_outcome(intent)
        if outcome is None:
            raise GatewayUnavailable(f"PaymentIntent {intent.id} is still {intent.status}.")
        return outcome

    async def refund(self, *, key: str, reference: str, amount: Decimal, currency: str) -> Outcome:
        """Refund ``amount`` of the PaymentIntent ``reference`` (idempotent per ``key``): a Refund Stripe has not
        decided yet (``pending``, ``requires_action``) is a ``pending`` :class:`Outcome` with its id, for
        :meth:`find_refund` later (asking again with ``key`` would only replay this first answer)."""
        try:
            refund = await self.client.v1.refunds.create_async(
                params={"payment_intent": reference, "amount": _minor(amount), "metadata": {"mercato_key": key}},
                options={"idempotency_key": key},
            )
        except stripe.InvalidRequestError as exc:
            return Outcome("failed", None, amount, exc.code or "invalid_request")
        except stripe.StripeError as exc:
            raise GatewayUnavailable(f"Stripe did not answer ({type(exc).__name__}).") from exc
        return self._refund_outcome(refund)

    async def find_refund(self, reference: str) -> Outcome:
        """The Refund ``reference`` as Stripe has it now (``GET /v1/refunds/{id}``).

        Raises:
            GatewayUnavailable: Stripe did not answer (or does not know the refund: a person has to look).
        """
        try:
            refund = await self.client.v1.refunds.retrieve_async(reference)
        except stripe.StripeError as exc:
            raise GatewayUnavailable(f"Stripe did not answer ({type(exc).__name__}).") from exc
        return self._refund_outcome(refund)

    @staticmethod
    def _refund_outcome(refund: Any) -> Outcome:
        if refund.status == "succeeded":
            return Outcome("succeeded", refund.id, _major(refund.amount))
        if refund.status in _REFUND_UNDECIDED:
            return Outcome("pending", refund.id, _major(refund.amount))
        return Outcome("failed", refund.id, _major(refund.amount), refund.failure_reason or refund.status)

    async def find_charge(self, key: str, *, reference: str | None = None) -> Outcome | None:
        """The PaymentIntent created with ``key`` (Search API on ``metadata['mercato_key']``), or ``reference``
        when known (``GET /v1/payment_intents/{id}``: current at once, where the search index lags), if decided
        (one that ``requires_action`` is cancelled and reported failed, as in :meth:`charge`).

        Raises:
            GatewayUnavailable: Stripe did not answer, or the intent is not decided yet (retry later).
        """
        try:
            if reference is not None:
                intent = await self.client.v1.payment_intents.retrieve_async(reference)
            else:
                found = await self.client.v1.payment_intents.search_async(
                    params={"query": f"metadata['mercato_key']:'{key}'", "limit": 1}
                )
                if not found.data:
                    return None
                intent = found.data[0]
        except stripe.StripeError as exc:
            raise GatewayUnavailable(f"Stripe did not answer ({type(exc).__name__}).") from exc
        if intent.status == "requires_action":
            return await self._abandon(intent)
        outcome = self._intent_outcome(intent)
        if outcome is None:
            raise GatewayUnavailable(f"PaymentIntent {intent.id} is still {intent.status}.")
        return outcome

    @staticmethod
    def _intent_outcome(intent: Any) -> Outcome | None:
        status = _FINAL.get(intent.status)
        if status == "succeeded":
            return Outcome("succeeded", intent.id, _major(intent.amount_received or intent.amount))
        if status == "failed":
            error = getattr(intent, "last_payment_error", None)
            reason = (getattr(error, "decline_code", None) or getattr(error, "code", None)) if error else None
            return Outcome("failed", intent.id, _major(intent.amount), reason or intent.status)
        return None

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> Notification:
        """Verify ``Stripe-Signature`` with ``stripe.Webhook`` (HMAC-SHA256, 5-minute tolerance) and map the
        event to ours. Raises :class:`MalformedWebhook` (400) or :class:`InvalidSignature` (401)."""
        signature = headers.get("stripe-signature") or headers.get("Stripe-Signature")
        if not signature:
            raise MalformedWebhook("Missing Stripe-Signature header.")
        try:
            event = stripe.Webhook.construct_event(body, signature, self.webhook_secret, tolerance=WEBHOOK_TOLERANCE)
        except stripe.SignatureVerificationError as exc:
            raise InvalidSignature("The Stripe signature does not match or is older than 5 minutes.") from exc
        except ValueError as exc:
            raise MalformedWebhook("The webhook body is not a Stripe event.") from exc
        obj = event.data.object.to_dict()
        metadata = obj.get("metadata") or {}
        kind = _EVENTS.get(event.type, event.type)
        return Notification(event.id, kind, metadata.get("mercato_key"), obj.get("id"), dict(obj))
