"""The Stripe-shaped gateway against recorded Stripe responses (tests/fixtures/stripe; no network): what it
sends (amounts in minor units, our key as Stripe's Idempotency-Key and metadata), how it reads successes,
declines, refunds and searches, how it maps outages, and Stripe-Signature webhook verification."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import stripe

from mercato.payments.gateways.base import GatewayUnavailable, InvalidSignature, MalformedWebhook, UnknownToken
from mercato.payments.gateways.stripe import StripeGateway

FIXTURES = Path(__file__).parent.parent / "fixtures" / "stripe"
KEY = "01932c90-1111-7cc3-9d1e-3f6a2b1c0d9e"
SECRET = "whsec_test_0123456789abcdef"


class Replay(stripe.HTTPClient):
    """A ``stripe.HTTPClient`` that answers from fixture files and remembers every request."""

    name = "replay"

    def __init__(self, answers: Mapping[tuple[str, str], tuple[str, int] | Exception]) -> None:
        super().__init__()
        self.answers = answers
        self.requests: list[dict[str, Any]] = []

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        parts = urlsplit(url)
        self.requests.append(
            {
                "method": method,
                "path": parts.path,
                "query": parse_qs(parts.query),
                "form": parse_qs(post_data.decode() if isinstance(post_data, bytes) else post_data or ""),
                "headers": dict(headers),
            }
        )
        answer = self.answers[(method.upper(), parts.path)]
        if isinstance(answer, Exception):
            raise answer
        name, status = answer
        return (FIXTURES / name).read_bytes(), status, {"request-id": "req_test"}

    async def sleep_async(self, secs: float) -> None:
        return None

    async def close_async(self) -> None:
        return None


def gateway(answers: Mapping[tuple[str, str], tuple[str, int] | Exception]) -> tuple[StripeGateway, Replay]:
    replay = Replay(answers)
    return StripeGateway("sk_test_mercato", SECRET, http_client=replay), replay


async def test_a_token_becomes_a_saved_card() -> None:
    stripe_, replay = gateway({("POST", "/v1/payment_methods"): ("payment_method.json", 200)})

    card = await stripe_.card("tok_visa")

    assert (card.brand, card.last4, card.exp_month, card.exp_year) == ("visa", "4242", 12, 2034)
    assert card.token == "pm_1QhXyZ2eZvKYlo2C0a1b2c3d"
    assert replay.requests[0]["form"]["card[token]"] == ["tok_visa"]


async def test_a_token_is_turned_into_a_payment_method_under_the_callers_key() -> None:
    stripe_, replay = gateway({("POST", "/v1/payment_methods"): ("payment_method.json", 200)})

    await stripe_.card("tok_visa", key="attempt-key:pm")
    await stripe_.card("tok_visa")

    assert replay.requests[0]["headers"]["Idempotency-Key"] == "attempt-key:pm"  # a retry gets the same one back
    assert replay.requests[1]["headers"].get("Idempotency-Key") != "attempt-key:pm"


async def test_a_saved_card_is_attached_to_a_customer_and_charged_through_it() -> None:
    stripe_, replay = gateway(
        {
            ("POST", "/v1/payment_methods"): ("payment_method.json", 200),
            ("POST", "/v1/customers"): ("customer.json", 200),
            ("POST", "/v1/payment_intents"): ("payment_intent_succeeded.json", 200),
        }
    )

    saved = await stripe_.save("tok_visa")
    outcome = await stripe_.charge(key=KEY, amount=Decimal("19.99"), currency="USD", token=saved.token)

    assert saved.token == "cus_RaXyZ2eZvKYlo2C/pm_1QhXyZ2eZvKYlo2C0a1b2c3d" and saved.last4 == "4242"
    assert replay.requests[1]["form"]["payment_method"] == ["pm_1QhXyZ2eZvKYlo2C0a1b2c3d"]
    charged = replay.requests[2]["form"]
    assert charged["customer"] == ["cus_RaXyZ2eZvKYlo2C"] and charged["payment_method"] == [
        "pm_1QhXyZ2eZvKYlo2C0a1b2c3d"
    ]
    assert outcome.status == "succeeded"


async def test_an_unknown_token_is_refused() -> None:
    stripe_, _ = gateway({("POST", "/v1/payment_methods"): ("invalid_token.json", 404)})
    with pytest.raises(UnknownToken):
        await stripe_.card("tok_nonsense")


async def test_a_charge_sends_minor_units_and_our_key() -> None:
    stripe_, replay = gateway({("POST", "/v1/payment_intents"): ("payment_intent_succeeded.json", 200)})

    outcome = await stripe_.charge(
        key=KEY, amount=Decimal("19.99"), currency="USD", token="pm_1QhXyZ2eZvKYlo2C0a1b2c3d"
    )

    assert (outcome.status, outcome.reference, outcome.amount) == (
        "succeeded",
        "pi_3QhXyZ2eZvKYlo2C1e2f3g4h",
        Decimal("19.99"),
    )
    sent = replay.requests[0]
    assert sent["headers"]["Idempotency-Key"] == KEY
    assert sent["form"]["amount"] == ["1999"] and sent["form"]["currency"] == ["usd"]
    assert sent["form"]["metadata[mercato_key]"] == [KEY] and sent["form"]["confirm"] == ["true"]
    assert sent["form"]["payment_method"] == ["pm_1QhXyZ2eZvKYlo2C0a1b2c3d"]


async def test_a_decline_is_a_failed_outcome_with_stripes_reason() -> None:
    stripe_, _ = gateway({("POST", "/v1/payment_intents"): ("card_declined.json", 402)})

    outcome = await stripe_.charge(key=KEY, amount=Decimal("19.99"), currency="USD", token="tok_chargeDeclined")

    assert (outcome.status, outcome.failure_reason) == ("failed", "insufficient_funds")
    assert outcome.reference == "pi_3QhXyZ2eZvKYlo2C5m6n7o8p"


async def test_refunds_and_reconciliation_lookups() -> None:
    stripe_, replay = gateway(
        {
            ("POST", "/v1/refunds"): ("refund.json", 200),
            ("GET", "/v1/payment_intents/search"): ("search_empty.json", 200),
        }
    )

    refund = await stripe_.refund(
        key="re-key", reference="pi_3QhXyZ2eZvKYlo2C1e2f3g4h", amount=Decimal("5.00"), currency="USD"
    )
    missing = await stripe_.find_charge(KEY)

    assert (refund.status, refund.reference, refund.amount) == (
        "succeeded",
        "re_3QhXyZ2eZvKYlo2C9q8r7s6t",
        Decimal("5.00"),
    )
    assert (
        replay.requests[0]["form"]["amount"] == ["500"] and replay.requests[0]["headers"]["Idempotency-Key"] == "re-key"
    )
    assert missing is None
    assert replay.requests[1]["query"]["query"] == [f"metadata['mercato_key']:'{KEY}'"]


async def test_a_pending_refund_is_pending_and_looked_up_by_its_id() -> None:
    stripe_, replay = gateway(
        {
            ("POST", "/v1/refunds"): ("refund_pending.json", 200),
            ("GET", "/v1/refunds/re_3QhXyZ2eZvKYlo2C7u6v5w4x"): ("refund_failed.json", 200),
        }
    )

    pending = await stripe_.refund(
        key="re-key", reference="pi_3QhXyZ2eZvKYlo2C1e2f3g4h", amount=Decimal("5.00"), currency="USD"
    )
    assert pending.reference is not None
    later = await stripe_.find_refund(pending.reference)

    assert (pending.status, pending.reference, pending.amount) == (
        "pending",
        "re_3QhXyZ2eZvKYlo2C7u6v5w4x",
        Decimal("5.00"),
    )
    assert (later.status, later.failure_reason) == ("failed", "expired_or_canceled_card")
    assert replay.requests[1]["method"].upper() == "GET"


async def test_an_outage_is_gateway_unavailable() -> None:
    stripe_, _ = gateway({("POST", "/v1/payment_intents"): stripe.APIConnectionError("connection reset")})
    with pytest.raises(GatewayUnavailable):
        await stripe_.charge(key=KEY, amount=Decimal("1.00"), currency="USD", token="tok_visa")


def _signed(payload: bytes, at: int, secret: str = SECRET) -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"stripe-signature": f"t={at},v1={mac}"}


def test_webhooks_are_verified_with_stripes_scheme() -> None:
    stripe_, _ = gateway({})
    intent = json.loads((FIXTURES / "payment_intent_succeeded.json").read_text())
    payload = json.dumps(
        {"id": "evt_1", "object": "event", "type": "payment_intent.succeeded", "data": {"object": intent}}
    ).encode()
    now = datetime.now(UTC)

    event = stripe_.verify(payload, _signed(payload, int(time.time())), now)

    assert (event.event_id, event.type, event.key, event.reference) == (
        "evt_1",
        "charge.succeeded",
        KEY,
        "pi_3QhXyZ2eZvKYlo2C1e2f3g4h",
    )
    with pytest.raises(InvalidSignature):
        stripe_.verify(payload, _signed(payload, int(time.time()), secret="whsec_other"), now)
    with pytest.raises(InvalidSignature):
        stripe_.verify(payload, _signed(payload, int(time.time()) - 301), now)
    with pytest.raises(MalformedWebhook):
        stripe_.verify(payload, {}, now)
