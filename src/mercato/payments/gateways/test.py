"""The built-in ``test`` gateway (the default): Stripe's test tokens, deterministic references, its own ledger.

It behaves like a remote gateway that happens to keep its books in our database: every charge and refund is a row
of ``test_gateway_ledger`` written in the gateway's *own* committed transaction, so after a crash reconciliation
can ask it what it did (API.md "Payments"). Tokens (API.md, as Stripe's test mode):

=====================================  ==========  =====  =================================
token                                  brand       last4  outcome
=====================================  ==========  =====  =================================
``tok_visa``                           visa        4242   succeeds
``tok_mastercard``                     mastercard  4444   succeeds
``tok_chargeDeclined``                 visa        0002   declined, ``card_declined``
``tok_chargeDeclinedInsufficientFunds`` visa       9995   declined, ``insufficient_funds``
=====================================  ==========  =====  =================================

``MERCATO_TEST_GATEWAY_DELAY`` (seconds) makes every call wait before it acts (to exercise timeouts: a call
cancelled by the timeout never charges); ``MERCATO_TEST_GATEWAY_HOLD`` makes a charge wait *after* it is booked
(to kill the server between the gateway's success and our record, in the crash test). Webhooks are signed like
Stripe's: header ``Mercato-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, mapped_column

from mercato.db.base import Base, uuid_pk
from mercato.db.engine import Database
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
from mercato.platform import clock

SIGNATURE_HEADER = "Mercato-Signature"
#: token → (brand, last4, failure reason or None)
CARDS: dict[str, tuple[str, str, str | None]] = {
    "tok_visa": ("visa", "4242", None),
    "tok_mastercard": ("mastercard", "4444", None),
    "tok_chargeDeclined": ("visa", "0002", "card_declined"),
    "tok_chargeDeclinedInsufficientFunds": ("visa", "9995", "insufficient_funds"),
}
EXP_MONTH, EXP_YEAR = 12, 2034


class LedgerEntry(Base):
    """The test gateway's own books: one row per charge or refund it was asked for (``key`` is the caller's
    idempotency key); ``parent`` is the charge a refund belongs to."""

    __tablename__ = "test_gateway_ledger"

    id: Mapped[uuid.UUID] = uuid_pk()
    kind: Mapped[str] = mapped_column(String(8))
    key: Mapped[str] = mapped_column(String(100), unique=True)
    reference: Mapped[str] = mapped_column(String(100), unique=True)
    parent: Mapped[str | None] = mapped_column(String(100), index=True)
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(10))
    failure_reason: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


def _reference(prefix: str, key: str) -> str:
    return f"{prefix}_test_{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def _outcome(entry: LedgerEntry) -> Outcome:
    if entry.status == "succeeded":
        return Outcome("succeeded", entry.reference, entry.amount)
    return Outcome("failed", entry.reference, entry.amount, entry.failure_reason)


class TestGateway:
    """The ``test`` gateway (see the module docstring).

    Args:
        db: the database holding its ledger (each call commits on its own, like a remote service).
        webhook_secret: the HMAC key of its callbacks.
        delay: seconds every call waits before acting; hold: seconds a charge waits after it is booked.
    """

    name = "test"
    lookup_lag = 0.0
    __test__ = False  # not a pytest test class

    def __init__(self, db: Database, webhook_secret: str, *, delay: float = 0.0, hold: float = 0.0) -> None:
        self.db = db
        self.webhook_secret = webhook_secret
        self.delay = delay
        self.hold = hold

    async def card(self, token: str, *, key: str | None = None) -> Card:
        """The test card of ``token`` (table above; ``key`` is not needed: test tokens are reusable); any other
        token → :class:`UnknownToken`."""
        if token not in CARDS:
            raise UnknownToken(f"Unknown payment token {token!r}; the test gateway knows {', '.join(CARDS)}.")
        brand, last4, _ = CARDS[token]
        return Card(brand, last4, EXP_MONTH, EXP_YEAR, token)

    async def save(self, token: str) -> Card:
        """Test tokens are reusable as they are (as in Stripe's test mode)."""
        return await self.card(token)

    async def charge(self, *, key: str, amount: Decimal, currency: str, token: str) -> Outcome:
        """Book a charge (idempotent per ``key``): succeeded, or failed with the token's decline reason."""
        card = await self.card(token)
        await asyncio.sleep(self.delay)
        async with self.db.session(write=True) as session:
            entry = await session.scalar(select(LedgerEntry).where(LedgerEntry.key == key))
            if entry is None:
                reason = CARDS[card.token][2]
                entry = LedgerEntry(
                    kind="charge",
                    key=key,
                    reference=_reference("ch", key),
                    amount=amount,
                    currency=currency,
                    status="failed" if reason else "succeeded",
                    failure_reason=reason,
                )
                session.add(entry)
        await asyncio.sleep(self.hold)
        return _outcome(entry)

    async def refund(self, *, key: str, reference: str, amount: Decimal, currency: str) -> Outcome:
        """Book a refund of ``amount`` on the succeeded charge ``reference`` (idempotent per ``key``); more than
        what is left of the charge fails with ``amount_too_large``, an unknown charge with ``no_such_charge``."""
        await asyncio.sleep(self.delay)
        async with self.db.session(write=True) as session:
            entry = await session.scalar(select(LedgerEntry).where(LedgerEntry.key == key))
            if entry is None:
                charge = await session.scalar(
                    select(LedgerEntry).where(LedgerEntry.reference == reference, LedgerEntry.kind == "charge")
                )
                earlier = await session.scalars(
                    select(LedgerEntry.amount).where(LedgerEntry.parent == reference, LedgerEntry.status == "succeeded")
                )
                reason = None
                if charge is None or charge.status != "succeeded":
                    reason = "no_such_charge"
                elif sum(earlier, Decimal(0)) + amount > charge.amount:
                    reason = "amount_too_large"
                entry = LedgerEntry(
                    kind="refund",
                    key=key,
                    reference=_reference("re", key),
                    parent=reference,
                    amount=amount,
                    currency=currency,
                    status="failed" if reason else "succeeded",
                    failure_reason=reason,
                )
                session.add(entry)
        return _outcome(entry)

    async def find_charge(self, key: str, *, reference: str | None = None) -> Outcome | None:
        """The booked charge for ``key`` (its ledger is current: ``reference`` is not needed), or None when the
        gateway never took it."""
        async with self.db.session(write=False) as session:
            entry = await session.scalar(
                select(LedgerEntry).where(LedgerEntry.key == key, LedgerEntry.kind == "charge")
            )
        return _outcome(entry) if entry is not None else None

    async def find_refund(self, reference: str) -> Outcome:
        """The booked refund ``reference`` (test refunds are decided at once, so never ``pending``).

        Raises:
            GatewayUnavailable: no refund ``reference`` in the ledger.
        """
        async with self.db.session(write=False) as session:
            entry = await session.scalar(
                select(LedgerEntry).where(LedgerEntry.reference == reference, LedgerEntry.kind == "refund")
            )
        if entry is None:
            raise GatewayUnavailable(f"The test gateway has no refund {reference}.")
        return _outcome(entry)

    def sign(self, body: bytes, timestamp: int) -> str:
        """The ``Mercato-Signature`` header value for ``body`` sent at ``timestamp`` (Unix seconds)."""
        mac = hmac.new(self.webhook_secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        return f"t={timestamp},v1={mac}"

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> Notification:
        """Verify ``Mercato-Signature`` (HMAC-SHA256, constant-time compare, at most 5 minutes old) and parse
        ``{"id", "type", "data": {"key"?, "reference"?}}``. Raises as :meth:`Gateway.verify`."""
        header = headers.get(SIGNATURE_HEADER.lower()) or headers.get(SIGNATURE_HEADER)
        if not header:
            raise MalformedWebhook(f"Missing {SIGNATURE_HEADER} header.")
        try:
            parts = dict(part.strip().split("=", 1) for part in header.split(","))
            timestamp = int(parts["t"])
            given = parts["v1"]
        except (KeyError, ValueError) as exc:
            raise MalformedWebhook(f"Unreadable {SIGNATURE_HEADER} header.") from exc
        expected = self.sign(body, timestamp).split("v1=", 1)[1]
        if not hmac.compare_digest(expected, given):
            raise InvalidSignature("The webhook signature does not match.")
        if abs(now.timestamp() - timestamp) > WEBHOOK_TOLERANCE:
            raise InvalidSignature("The webhook was signed more than 5 minutes ago (a replay?).")
        try:
            event = json.loads(body)
            data = event.get("data") or {}
            return Notification(str(event["id"]), str(event["type"]), data.get("key"), data.get("reference"), data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MalformedWebhook("The webhook body is not a JSON event with id and type.") from exc
