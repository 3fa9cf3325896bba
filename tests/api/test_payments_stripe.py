"""Payments through the Stripe gateway end to end (API.md "Payments"), Stripe answering from the recorded objects of
tests/fixtures/stripe through the library's HTTP-client hook (no network). ``FakeStripe`` keeps Stripe's books the
way Stripe does where it matters here: an Idempotency-Key replays its first answer (another body → 400
``idempotency_error``), a ``tok_...`` is single-use, PaymentIntents and Refunds can be looked up and move on
(``processing`` → ``succeeded``, ``pending`` → ``succeeded``/``failed``) — on every backend."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import stripe
from sqlalchemy import select

from mercato.app import create_app
from mercato.checks import all_checks
from mercato.payments import gateways, handlers
from mercato.payments import service as payments
from mercato.payments.gateways.base import GatewayUnavailable
from mercato.payments.gateways.stripe import StripeGateway
from mercato.payments.models import Refund
from mercato.platform.context import Services
from mercato.platform.jobs import Job
from tests.api.test_orders import count, stock
from tests.api.test_payments import money_problems, order_row, placed, run_jobs_at
from tests.conftest import Backend, bearer, make_admin, run_jobs_after_reservation_ttl, sent_mail

FIXTURES = Path(__file__).parent.parent / "fixtures" / "stripe"
SECRET = "whsec_test_0123456789abcdef"
PAYMENTS = "/api/v1/payments"


def _fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


def _error(kind: str, code: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "code": code, "message": message}}


class FakeStripe(stripe.HTTPClient):
    """Stripe's books for one test, answering with the fixtures' objects (ids, amounts and states filled in).

    ``intent_status`` is the state a new PaymentIntent gets; ``refund_status`` a new Refund's; ``down`` makes every
    PaymentIntent creation land at Stripe but its answer get lost (a timeout, as the library sees it).
    """

    name = "fake-stripe"

    def __init__(self) -> None:
        super().__init__()
        self.intent_status = "succeeded"
        self.refund_status = "succeeded"
        self.down = False
        self.intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.used_tokens: set[str] = set()
        self.replies: dict[str, tuple[dict[str, list[str]], tuple[dict[str, Any], int]]] = {}
        self.requests: list[tuple[str, str, dict[str, list[str]], str | None]] = []

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        path = urlsplit(url).path
        raw = post_data.decode() if isinstance(post_data, bytes) else post_data or ""
        form = parse_qs(raw) or parse_qs(urlsplit(url).query)
        key = headers.get("Idempotency-Key")
        self.requests.append((method.upper(), path, form, key))
        if key is not None and key in self.replies:
            sent, reply = self.replies[key]
            if sent != form:
                reply = (_error("idempotency_error", "idempotency_key_in_use", "Keys are for one request."), 400)
        else:
            reply = self._answer(method.upper(), path, form)
            if key is not None:
                self.replies[key] = (form, reply)
        if self.down and path == "/v1/payment_intents":
            raise stripe.APIConnectionError("read timeout")
        body, status = reply
        return json.dumps(body).encode(), status, {"request-id": "req_fake"}

    def _answer(self, method: str, path: str, form: dict[str, list[str]]) -> tuple[dict[str, Any], int]:
        if (method, path) == ("POST", "/v1/payment_methods"):
            token = form["card[token]"][0]
            if token in self.used_tokens:
                return _error("invalid_request_error", "token_already_used", "This token was used already."), 400
            self.used_tokens.add(token)
            return _fixture("payment_method.json") | {"id": f"pm_fake{len(self.used_tokens)}"}, 200
        if (method, path) == ("POST", "/v1/payment_intents"):
            intent = _fixture("payment_intent_succeeded.json") | {
                "id": f"pi_fake{len(self.intents) + 1}",
                "amount": int(form["amount"][0]),
                "amount_received": int(form["amount"][0]) if self.intent_status == "succeeded" else 0,
                "status": self.intent_status,
                "payment_method": form.get("payment_method", [None])[0],
                "metadata": {"mercato_key": form["metadata[mercato_key]"][0]},
            }
            self.intents[intent["id"]] = intent
            return intent, 200
        if (method, path) == ("GET", "/v1/payment_intents/search"):
            wanted = form["query"][0].split(":'", 1)[1].rstrip("'")
            found = [i for i in self.intents.values() if i["metadata"]["mercato_key"] == wanted]
            return _fixture("search_empty.json") | {"data": found}, 200
        if method == "GET" and path.startswith("/v1/payment_intents/pi_"):
            return self.intents[path.split("/")[3]], 200
        if method == "POST" and path.startswith("/v1/payment_intents/") and path.endswith("/cancel"):
            intent = self.intents[path.split("/")[3]]
            intent["status"] = "canceled"
            return intent, 200
        if (method, path) == ("POST", "/v1/refunds"):
            refund = _fixture("refund.json") | {
                "id": f"re_fake{len(self.refunds) + 1}",
                "amount": int(form["amount"][0]),
                "payment_intent": form["payment_intent"][0],
                "status": self.refund_status,
                "metadata": {"mercato_key": form["metadata[mercato_key]"][0]},
            }
            self.refunds[refund["id"]] = refund
            return refund, 200
        if method == "GET" and path.startswith("/v1/refunds/"):
            return self.refunds[path.split("/")[3]], 200
        raise AssertionError(f"unexpected Stripe call {method} {path}")

    def settle_intent(self, status: str) -> dict[str, Any]:
        """The last PaymentIntent leaves ``processing`` (as Stripe later decides it)."""
        intent = list(self.intents.values())[-1]
        intent["status"] = status
        intent["amount_received"] = intent["amount"] if status == "succeeded" else 0
        return intent

    def settle_refund(self, status: str) -> dict[str, Any]:
        """The last Refund leaves ``pending``."""
        refund = list(self.refunds.values())[-1]
        refund["status"] = status
        refund["failure_reason"] = "expired_or_canceled_card" if status == "failed" else None
        return refund

    async def sleep_async(self, secs: float) -> None:
        return None

    async def close_async(self) -> None:
        return None


@pytest.fixture
async def fake() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
async def stripe_services(
    migrated: Backend, services: Services, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Services]:
    """A second app's services on the test database, taking payments through Stripe (the fake one)."""
    built = Services.build(
        migrated.settings(payment_gateway="stripe", stripe_api_key="sk_test_mercato", stripe_webhook_secret=SECRET),
        cache_prefix=migrated.prefix,
    )
    gateway = StripeGateway("sk_test_mercato", SECRET, http_client=fake)
    monkeypatch.setitem(gateways._cache, (id(built), "stripe"), gateway)
    monkeypatch.setitem(gateways._cache, (id(services), "stripe"), gateway)  # its jobs run on the test app
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
async def stripe_client(stripe_services: Services, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stripe_services.settings, services=stripe_services)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def _admin(services: Services, client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await make_admin(services, client))


def _event(kind: str, obj: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A Stripe event signed as Stripe signs it (``Stripe-Signature: t=...,v1=...``)."""
    body = json.dumps(
        {"id": f"evt_{uuid.uuid4().hex[:12]}", "object": "event", "type": kind, "data": {"object": dict(obj)}}
    ).encode()
    at = int(time.time())
    mac = hmac.new(SECRET.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={at},v1={mac}", "Content-Type": "application/json"}


async def test_retrying_a_timed_out_payment_with_a_token_and_its_key_pays_once(
    client: httpx.AsyncClient, stripe_client: httpx.AsyncClient, services: Services, fake: FakeStripe
) -> None:
    admin = await _admin(services, client)
    order, headers, _ = await placed(client, admin)
    key = headers | {"Idempotency-Key": str(uuid.uuid4())}
    body = {"order_id": order["id"], "payment_token": "tok_visa"}
    fake.down = True  # the PaymentIntent is made, its answer lost
    assert (await stripe_client.post(PAYMENTS, json=body, headers=key)).status_code == 503
    fake.down = False

    retried = await stripe_client.post(PAYMENTS, json=body, headers=key)

    assert retried.status_code == 201, retried.text
    assert retried.json()["status"] == "completed" and retried.json()["gateway_reference"] == "pi_fake1"
    assert len(fake.intents) == 1 and len(fake.used_tokens) == 1  # one PaymentMethod, one charge
    assert (await order_row(services, order["id"])).payment_status == "paid"
    assert await money_problems(services) == []


async def test_a_processing_payment_stays_pending_until_stripe_decides(
    client: httpx.AsyncClient,
    stripe_client: httpx.AsyncClient,
    services: Services,
    stripe_services: Services,
    fake: FakeStripe,
) -> None:
    admin = await _admin(services, client)
    order, headers, _ = await placed(client, admin)
    key = headers | {"Idempotency-Key": str(uuid.uuid4())}
    body = {"order_id": order["id"], "payment_token": "tok_visa"}
    fake.intent_status = "processing"

    undecided = await stripe_client.post(PAYMENTS, json=body, headers=key)

    assert undecided.status_code == 503 and undecided.json()["type"].endswith("/service-unavailable")  # as a timeout
    listed = (await client.get(PAYMENTS, headers=headers)).json()["data"]
    assert [(p["status"], p["gateway_reference"], p["failure_reason"]) for p in listed] == [
        ("pending", "pi_fake1", None)
    ]
    assert (await order_row(services, order["id"])).payment_status == "unpaid"
    assert await count(services, Job, Job.name == "payments.reconcile") == 1  # the safety net stays
    with pytest.raises(GatewayUnavailable):  # the reconcile job asks again later
        await payments.reconcile_payment(stripe_services, uuid.UUID(listed[0]["id"]))
    assert (await stripe_client.post(PAYMENTS, json=body, headers=key)).status_code == 409  # in progress

    event, signed = _event("payment_intent.succeeded", fake.settle_intent("succeeded"))
    assert (await stripe_client.post(f"{PAYMENTS}/webhooks/stripe", content=event, headers=signed)).status_code == 200

    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status) == ("processing", "paid")
    asked = [path for method, path, _, _ in fake.requests if method == "GET"]
    assert set(asked) == {"/v1/payment_intents/pi_fake1"}  # by its id: current, unlike the lagging search
    replayed = await stripe_client.post(PAYMENTS, json=body, headers=key)
    assert replayed.status_code == 201 and replayed.json()["id"] == listed[0]["id"]
    assert replayed.json()["status"] == "completed" and len(fake.intents) == 1
    assert await money_problems(services) == []


async def test_a_processing_payment_that_fails_leaves_the_order_payable(
    client: httpx.AsyncClient,
    stripe_client: httpx.AsyncClient,
    services: Services,
    stripe_services: Services,
    fake: FakeStripe,
) -> None:
    admin = await _admin(services, client)
    order, headers, _ = await placed(client, admin)
    fake.intent_status = "processing"
    assert (
        await stripe_client.post(PAYMENTS, json={"order_id": order["id"], "payment_token": "tok_visa"}, headers=headers)
    ).status_code == 503
    payment_id = uuid.UUID((await client.get(PAYMENTS, headers=headers)).json()["data"][0]["id"])

    fake.settle_intent("requires_payment_method")
    assert await payments.reconcile_payment(stripe_services, payment_id) == "settled"

    failed = (await client.get(f"{PAYMENTS}/{payment_id}", headers=headers)).json()
    assert (failed["status"], failed["failure_reason"]) == ("failed", "requires_payment_method")
    assert (await order_row(services, order["id"])).payment_status == "failed"
    fake.intent_status = "succeeded"
    again = await stripe_client.post(
        PAYMENTS, json={"order_id": order["id"], "payment_token": "tok_mastercard"}, headers=headers
    )
    assert again.status_code == 201 and (await order_row(services, order["id"])).payment_status == "paid"
    assert await money_problems(services) == []


@pytest.mark.parametrize("decision", ["succeeded", "requires_payment_method"])
async def test_a_payment_stripe_still_processes_at_the_deadline_holds_the_order_until_stripe_decides(
    client: httpx.AsyncClient, stripe_client: httpx.AsyncClient, services: Services, fake: FakeStripe, decision: str
) -> None:
    """A PaymentIntent still ``processing`` when the reservation runs out: the expiry job leaves the order and its
    reserved units alone and looks again later. Stripe then decides: a success pays the order (its units sold,
    nothing refunded, never cancelled); a failure lets the next look cancel it as ``expired`` and release them."""
    admin = await _admin(services, client)
    order, headers, pid = await placed(client, admin)
    fake.intent_status = "processing"
    body = {"order_id": order["id"], "payment_token": "tok_visa"}
    assert (await stripe_client.post(PAYMENTS, json=body, headers=headers)).status_code == 503

    await run_jobs_after_reservation_ttl(services)

    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status, row.cancel_reason) == ("pending", "unpaid", None)
    assert await stock(services, pid) == (5, 2)
    async with services.db.session(write=False) as session:
        recheck = await session.scalar(select(Job.run_at).where(Job.name == "orders.expire"))
    deadline = datetime.fromisoformat(order["reservation_expires_at"])
    assert recheck is not None and recheck > deadline  # looks again later

    kind = "payment_intent.succeeded" if decision == "succeeded" else "payment_intent.payment_failed"
    event, signed = _event(kind, fake.settle_intent(decision))
    assert (await stripe_client.post(f"{PAYMENTS}/webhooks/stripe", content=event, headers=signed)).status_code == 200
    await run_jobs_at(services, deadline + timedelta(hours=2))

    row = await order_row(services, order["id"])
    if decision == "succeeded":
        assert (row.status, row.payment_status, row.cancel_reason) == ("processing", "paid", None)
        assert await stock(services, pid) == (3, 0)
    else:
        assert (row.status, row.payment_status, row.cancel_reason) == ("cancelled", "failed", "expired")
        assert await stock(services, pid) == (5, 0)
    events = (await client.get(f"/api/v1/orders/{order['id']}/events", headers=headers)).json()["data"]
    assert [e["type"] for e in events] == [
        "order.placed",
        "order.paid" if decision == "succeeded" else "order.payment_failed",
        *([] if decision == "succeeded" else ["order.cancelled"]),
    ]
    assert fake.refunds == {} and await count(services, Refund) == 0
    assert await count(services, Job, Job.name == "orders.expire") == 0
    assert await money_problems(services) == []


async def test_a_payment_that_requires_3d_secure_is_declined_and_cancelled_at_stripe(
    client: httpx.AsyncClient, stripe_client: httpx.AsyncClient, services: Services, fake: FakeStripe
) -> None:
    admin = await _admin(services, client)
    order, headers, _ = await placed(client, admin)
    fake.intent_status = "requires_action"

    declined = await stripe_client.post(
        PAYMENTS, json={"order_id": order["id"], "payment_token": "tok_visa"}, headers=headers
    )

    assert declined.status_code == 402, declined.text
    assert declined.json()["reason"] == "authentication_required"
    assert fake.intents["pi_fake1"]["status"] == "canceled"  # it can never capture later
    cancels = [r for r in fake.requests if r[1] == "/v1/payment_intents/pi_fake1/cancel"]
    assert len(cancels) == 1 and cancels[0][2]["cancellation_reason"] == ["abandoned"]
    payment = (await client.get(PAYMENTS, headers=headers)).json()["data"][0]
    assert (payment["status"], payment["failure_reason"]) == ("failed", "authentication_required")
    assert (await order_row(services, order["id"])).payment_status == "failed"  # payable with another card
    assert await money_problems(services) == []


async def _paid_through_stripe(
    client: httpx.AsyncClient, stripe_client: httpx.AsyncClient, services: Services
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """An order paid (40.00) through Stripe: (order, the customer's headers, an admin's headers)."""
    admin = await _admin(services, client)
    order, headers, _ = await placed(client, admin)
    paid = await stripe_client.post(
        PAYMENTS, json={"order_id": order["id"], "payment_token": "tok_visa"}, headers=headers
    )
    assert paid.status_code == 201, paid.text
    return order, headers, admin


async def _refund_mail(services: Services, to: str) -> list[str]:
    return [m.get_content() for m in await sent_mail(services, to) if "Refund" in str(m["Subject"])]


async def test_a_pending_stripe_refund_completes_when_stripe_says_so(
    client: httpx.AsyncClient, stripe_client: httpx.AsyncClient, services: Services, fake: FakeStripe
) -> None:
    order, headers, admin = await _paid_through_stripe(client, stripe_client, services)
    fake.refund_status = "pending"

    answer = await stripe_client.post(
        f"/api/v1/orders/{order['id']}/refund", json={"amount": "15.00", "reason": "scratched"}, headers=admin
    )

    assert answer.status_code == 201, answer.text
    assert (answer.json()["status"], answer.json()["amount"]) == ("pending", "15.00")
    payment = (await client.get(PAYMENTS, headers=headers)).json()["data"][0]
    assert (payment["status"], payment["refunded_amount"]) == ("completed", "0.00")  # no money moved yet
    assert (await order_row(services, order["id"])).payment_status == "paid"
    assert await _refund_mail(services, order["customer_email"]) == []  # nobody told of money not yet back
    assert await count(services, Job, Job.name == "payments.reconcile") == 1  # asks Stripe again later
    assert await money_problems(services) == []
    with pytest.raises(GatewayUnavailable):  # the job, while Stripe has not decided: kept, retried
        await handlers.reconcile(services, {"refund_id": answer.json()["id"]})

    event, signed = _event("refund.updated", fake.settle_refund("succeeded"))
    assert (await stripe_client.post(f"{PAYMENTS}/webhooks/stripe", content=event, headers=signed)).status_code == 200

    async with services.db.session(write=False) as session:
        refund = await session.get(Refund, uuid.UUID(answer.json()["id"]))
    assert refund is not None and (refund.status, refund.gateway_reference) == ("completed", "re_fake1")
    payment = (await client.get(PAYMENTS, headers=headers)).json()["data"][0]
    assert (payment["status"], payment["refunded_amount"]) == ("partially_refunded", "15.00")
    assert (await order_row(services, order["id"])).payment_status == "partially_refunded"
    mail = await _refund_mail(services, order["customer_email"])
    assert len(mail) == 1 and "15.00 USD" in mail[0]
    assert [r[1] for r in fake.requests].count("/v1/refunds/re_fake1") == 2  # looked up, never created twice
    assert len(fake.refunds) == 1 and await money_problems(services) == []
    await handlers.reconcile(services, {"refund_id": answer.json()["id"]})  # the job, later: nothing left to do


async def test_a_pending_stripe_refund_that_fails_leaves_the_money_where_it_was(
    client: httpx.AsyncClient, stripe_client: httpx.AsyncClient, services: Services, fake: FakeStripe
) -> None:
    order, headers, admin = await _paid_through_stripe(client, stripe_client, services)
    fake.refund_status = "pending"
    url = f"/api/v1/orders/{order['id']}/refund"
    answer = await stripe_client.post(url, json={"reason": "cancelled by phone"}, headers=admin)
    assert answer.status_code == 201 and answer.json()["status"] == "pending"
    assert (await stripe_client.post(url, json={"reason": "again"}, headers=admin)).status_code == 422  # held

    event, signed = _event("refund.failed", fake.settle_refund("failed"))
    assert (await stripe_client.post(f"{PAYMENTS}/webhooks/stripe", content=event, headers=signed)).status_code == 200

    async with services.db.session(write=False) as session:
        refund = await session.get(Refund, uuid.UUID(answer.json()["id"]))
    assert refund is not None
    assert (refund.status, refund.failure_reason) == ("failed", "expired_or_canceled_card")
    payment = (await client.get(PAYMENTS, headers=headers)).json()["data"][0]
    assert (payment["status"], payment["refunded_amount"]) == ("completed", "0.00")
    assert (await order_row(services, order["id"])).payment_status == "paid"
    assert await _refund_mail(services, order["customer_email"]) == []
    assert await money_problems(services) == []
    fake.refund_status = "succeeded"  # the money can be refunded again, another way
    again = await stripe_client.post(url, json={"reason": "bank transfer instead"}, headers=admin)
    assert again.status_code == 201 and again.json()["status"] == "completed"
    assert (await order_row(services, order["id"])).payment_status == "refunded"
    assert await money_problems(services) == []


async def test_a_refund_an_api_key_asked_for_names_the_key_when_stripe_completes_it_later(
    client: httpx.AsyncClient, stripe_client: httpx.AsyncClient, services: Services, fake: FakeStripe
) -> None:
    """The ``order.refunded`` event of a refund made with an API key names the key, also when Stripe decides the
    refund later and a webhook (sent with no key) records it."""
    order, headers, admin = await _paid_through_stripe(client, stripe_client, services)
    created = await client.post("/api/v1/admin/api-keys", headers=admin, json={"name": "erp", "role": "admin"})
    key_id, key = created.json()["id"], {"X-API-Key": created.json()["key"]}
    fake.refund_status = "pending"
    url = f"/api/v1/orders/{order['id']}/refund"
    answer = await stripe_client.post(url, json={"amount": "15.00", "reason": "scratched"}, headers=key)
    assert answer.status_code == 201 and answer.json()["status"] == "pending"

    event, signed = _event("refund.updated", fake.settle_refund("succeeded"))
    assert (await stripe_client.post(f"{PAYMENTS}/webhooks/stripe", content=event, headers=signed)).status_code == 200

    history = (await client.get(f"/api/v1/orders/{order['id']}/events", headers=headers)).json()["data"]
    assert [(e["type"], e["actor_id"], e["api_key_id"]) for e in history] == [
        ("order.placed", order["user_id"], None),
        ("order.paid", order["user_id"], None),
        ("order.refunded", None, key_id),
    ]
    assert history[2]["data"]["amount"] == "15.00"
    assert await money_problems(services) == []


async def _cancel_with_a_pending_refund(
    client: httpx.AsyncClient, stripe_client: httpx.AsyncClient, services: Services, runner: Services, fake: FakeStripe
) -> tuple[dict[str, Any], dict[str, str]]:
    """An order paid (40.00) through Stripe and cancelled by its customer; ``runner`` ran the refund job and Stripe
    took the refund (``re_fake1``) without deciding it yet. Returns the order and its customer's headers."""
    order, headers, _ = await _paid_through_stripe(client, stripe_client, services)
    fake.refund_status = "pending"
    cancelled = await stripe_client.delete(f"/api/v1/orders/{order['id']}", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    await runner.jobs.run_due()  # payments.refund_cancelled_order: Stripe answers pending, the job is done
    async with services.db.session(write=False) as session:
        refunds = list(await session.scalars(select(Refund)))
    assert [(r.amount, r.reason, r.status, r.gateway_reference) for r in refunds] == [
        (Decimal("40.00"), "order cancelled", "pending", "re_fake1")
    ]
    assert await count(services, Job, Job.name == "payments.refund_cancelled_order") == 0
    return order, headers


async def _still_to_refund(services: Services) -> list[str]:
    """What ``mercato check`` leaves to a person: cancelled orders holding money, dead jobs."""
    async with services.db.session(write=False) as session:
        checks = all_checks()
        return [*await checks["payments.cancelled_orders_refunded"](session), *await checks["jobs.none_dead"](session)]


async def test_a_cancelled_orders_refund_that_stripe_fails_later_is_made_again(
    client: httpx.AsyncClient,
    stripe_client: httpx.AsyncClient,
    services: Services,
    fake: FakeStripe,
) -> None:
    """The refund of a cancelled order was pending at Stripe when its job finished; Stripe then fails it
    (``refund.failed``). The money is not left with the shop: a new refund attempt (its own id, so its own
    Stripe Idempotency-Key) is scheduled with backoff, and refunds the order once Stripe accepts it."""
    order, headers = await _cancel_with_a_pending_refund(client, stripe_client, services, services, fake)

    event, signed = _event("refund.failed", fake.settle_refund("failed"))
    assert (await stripe_client.post(f"{PAYMENTS}/webhooks/stripe", content=event, headers=signed)).status_code == 200

    async with services.db.session(write=False) as session:
        retry = (await session.execute(select(Job).where(Job.name == "payments.refund_cancelled_order"))).scalar_one()
    assert (retry.status, retry.attempts, retry.payload) == ("queued", 1, {"order_id": order["id"]})
    assert await _still_to_refund(services) == []  # being retried: nobody needs to step in yet
    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status) == ("cancelled", "paid")
    fake.refund_status = "succeeded"
    await run_jobs_at(services, retry.run_at + timedelta(seconds=1))

    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status) == ("cancelled", "refunded")
    async with services.db.session(write=False) as session:
        refunds = list(await session.scalars(select(Refund).order_by(Refund.created_at)))
    assert [(r.amount, r.status, r.failure_reason, r.gateway_reference) for r in refunds] == [
        (Decimal("40.00"), "failed", "expired_or_canceled_card", "re_fake1"),
        (Decimal("40.00"), "completed", None, "re_fake2"),
    ]
    keys = [key for method, path, _, key in fake.requests if (method, path) == ("POST", "/v1/refunds")]
    assert keys == [str(r.id) for r in refunds]  # one Stripe refund per attempt, each under its own key
    payment = (await client.get(PAYMENTS, headers=headers)).json()["data"][0]
    assert (payment["status"], payment["refunded_amount"]) == ("refunded", "40.00")
    mail = await _refund_mail(services, order["customer_email"])
    assert len(mail) == 1 and "40.00 USD" in mail[0]
    assert await count(services, Job, Job.name == "payments.refund_cancelled_order") == 0
    assert await _still_to_refund(services) == [] and await money_problems(services) == []


async def test_a_cancelled_orders_refund_is_retried_a_bounded_number_of_times_then_reported(
    migrated: Backend,
    client: httpx.AsyncClient,
    stripe_client: httpx.AsyncClient,
    services: Services,
    fake: FakeStripe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Attempts of a cancelled order's refund that Stripe fails after taking them count against
    ``MERCATO_JOB_MAX_ATTEMPTS`` (here 2), as failed runs of the refund job do: after the last, nothing is
    scheduled again and ``mercato check`` names the order, the money it holds and Stripe's reason."""
    runner = Services.build(
        migrated.settings(
            payment_gateway="stripe", stripe_api_key="sk_test_mercato", stripe_webhook_secret=SECRET, job_max_attempts=2
        ),
        cache_prefix=migrated.prefix,
    )
    monkeypatch.setitem(gateways._cache, (id(runner), "stripe"), gateways.by_name(services, "stripe"))
    try:
        order, _ = await _cancel_with_a_pending_refund(client, stripe_client, services, runner, fake)
        now = datetime.now(UTC)
        fake.settle_refund("failed")
        await run_jobs_at(runner, now + timedelta(minutes=1))  # the refund's reconcile job finds it failed
        assert await count(services, Job, Job.name == "payments.refund_cancelled_order") == 1
        await run_jobs_at(runner, now + timedelta(minutes=2))  # the second attempt: pending at Stripe again
        assert await count(services, Refund, Refund.status == "pending") == 1
        fake.settle_refund("failed")

        await run_jobs_at(runner, now + timedelta(minutes=3))
    finally:
        await runner.close()

    assert await count(services, Job, Job.name == "payments.refund_cancelled_order") == 0  # no third attempt
    assert await count(services, Refund, Refund.status == "failed") == 2 and len(fake.refunds) == 2
    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status) == ("cancelled", "paid")
    assert await _still_to_refund(services) == [
        f"order {order['number']}: cancelled but payment_status paid, still holding 40.00 USD; "
        "last refund refused: expired_or_canceled_card"
    ]
    assert await money_problems(services) == []


async def test_the_test_gateway_looks_its_refunds_up_in_its_ledger(
    client: httpx.AsyncClient, services: Services
) -> None:
    gateway = gateways.by_name(services, "test")
    charge = await gateway.charge(key=str(uuid.uuid4()), amount=Decimal("9.00"), currency="USD", token="tok_visa")
    assert charge.reference is not None
    refund = await gateway.refund(
        key=str(uuid.uuid4()), reference=charge.reference, amount=Decimal("4.00"), currency="USD"
    )
    assert refund.reference is not None

    assert await gateway.find_refund(refund.reference) == refund
    with pytest.raises(GatewayUnavailable):
        await gateway.find_refund("re_test_unknown")
