"""Payments and refunds (API.md "Payments"): the test gateway's tokens, declines, access rules, idempotency,
refunds with restock, cancelling a paid order, saved cards, webhooks, gateway timeouts, reconciliation, and the
money check — on every backend."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mercato.app import create_app
from mercato.checks import all_checks
from mercato.inventory.models import InventoryHistory
from mercato.orders.models import Order
from mercato.payments import gateways, vault
from mercato.payments import service as payments
from mercato.payments.gateways.base import Outcome
from mercato.payments.gateways.test import LedgerEntry, TestGateway
from mercato.payments.models import Payment, PaymentMethod, Refund, WebhookEvent
from mercato.platform import clock
from mercato.platform.context import Services
from mercato.platform.jobs import Job
from tests.api.test_orders import ADDRESS, add, count, guest, product, stock
from tests.conftest import Backend, bearer, make_admin, register, run_jobs_after_reservation_ttl, sent_mail

PAYMENTS = "/api/v1/payments"


@pytest.fixture
async def admin(services: Services, client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await make_admin(services, client))


async def placed(
    client: httpx.AsyncClient, admin: dict[str, str], *, price: str = "20.00", quantity: int = 2, stock_: int = 5
) -> tuple[dict[str, Any], dict[str, str], str]:
    """A customer's pending order: (order, the customer's headers, product id)."""
    pid = await product(client, admin, price=price, stock=stock_)
    headers = bearer(await register(client))
    await add(client, pid, quantity, headers)
    response = await client.post("/api/v1/orders", json={"shipping_address": ADDRESS}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json(), headers, pid


async def pay(client: httpx.AsyncClient, order_id: str, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post(
        PAYMENTS, json={"order_id": order_id, **(body or {"payment_token": "tok_visa"})}, headers=headers
    )


async def money_problems(services: Services) -> list[str]:
    async with services.db.session(write=False) as session:
        return await all_checks()["payments.money_reconciles"](session)


async def order_row(services: Services, order_id: str) -> Order:
    async with services.db.session(write=False) as session:
        order = await session.get(Order, uuid.UUID(order_id))
        assert order is not None
        return order


async def test_paying_with_tok_visa_moves_the_order_to_processing_and_commits_stock(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, pid = await placed(client, admin)
    assert await stock(services, pid) == (5, 2)

    response = await pay(client, order["id"], headers)

    assert response.status_code == 201, response.text
    payment = response.json()
    assert payment["status"] == "completed" and payment["amount"] == "40.00" and payment["refunded_amount"] == "0.00"
    assert payment["method"] == {"brand": "visa", "last4": "4242"} and payment["gateway"] == "test"
    assert payment["gateway_reference"].startswith("ch_test_") and payment["failure_reason"] is None
    after = (await client.get(f"/api/v1/orders/{order['id']}", headers=headers)).json()
    assert (after["status"], after["payment_status"]) == ("processing", "paid")
    assert await stock(services, pid) == (3, 0)  # on hand and reserved both dropped
    events = (await client.get(f"/api/v1/orders/{order['id']}/events", headers=headers)).json()["data"]
    assert [(e["type"], e["status"]) for e in events] == [("order.placed", "pending"), ("order.paid", "processing")]
    listed = (await client.get(PAYMENTS, headers=headers)).json()
    assert [p["id"] for p in listed["data"]] == [payment["id"]]
    assert (await client.get(f"{PAYMENTS}/{payment['id']}", headers=headers)).json()["status"] == "completed"

    assert await count(services, Job, Job.name == "payments.reconcile") == 0  # answered: no safety net left

    again = await pay(client, order["id"], headers)
    assert again.status_code == 409 and again.json()["type"].endswith("/invalid-transition")
    assert await count(services, LedgerEntry) == 1 and await money_problems(services) == []
    paid_mail = [m for m in await sent_mail(services, order["customer_email"]) if "is paid" in str(m["Subject"])]
    assert len(paid_mail) == 1 and "40.00 USD" in paid_mail[0].get_content()


async def test_api_keys_read_payments_as_their_role_allows(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """API.md: GET /payments is "C (own), A": an admin API key reads every payment; a sales key, which has no
    payments of its own, reads none — not even a guest's, whose payment has no user either."""
    order, headers, _ = await placed(client, admin)
    paid = (await pay(client, order["id"], headers)).json()
    client.cookies.clear()  # now a guest's browser
    guest = await client.post("/api/v1/cart/items", json={"product_id": order["items"][0]["product_id"], "quantity": 1})
    assert guest.status_code == 201, guest.text
    guest_order = (
        await client.post("/api/v1/orders", json={"email": "g@example.com", "shipping_address": ADDRESS})
    ).json()
    guest_paid = await pay(client, guest_order["id"], {"X-Order-Token": guest_order["order_token"]})
    assert guest_paid.status_code == 201, guest_paid.text

    async def key(role: str) -> dict[str, str]:
        created = await client.post("/api/v1/admin/api-keys", headers=admin, json={"name": role, "role": role})
        return {"X-API-Key": created.json()["key"]}

    admin_key, sales_key = await key("admin"), await key("sales")
    client.cookies.clear()
    assert (await client.get(f"{PAYMENTS}/{paid['id']}", headers=admin_key)).json()["amount"] == "40.00"
    assert (await client.get(PAYMENTS, headers=admin_key)).json()["pagination"]["total"] == 2
    assert (await client.get(f"{PAYMENTS}/{guest_paid.json()['id']}", headers=sales_key)).status_code == 404
    assert (await client.get(PAYMENTS, headers=sales_key)).status_code == 403


@pytest.mark.parametrize(
    ("token", "reason"),
    [("tok_chargeDeclined", "card_declined"), ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds")],
)
async def test_a_declined_card_records_a_failed_payment_and_keeps_the_order_payable(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services, token: str, reason: str
) -> None:
    order, headers, pid = await placed(client, admin)

    declined = await pay(client, order["id"], headers, payment_token=token)

    assert declined.status_code == 402, declined.text
    assert declined.json()["type"].endswith("/payment-declined") and declined.json()["reason"] == reason
    after = (await client.get(f"/api/v1/orders/{order['id']}", headers=headers)).json()
    assert (after["status"], after["payment_status"]) == ("pending", "failed")
    assert await stock(services, pid) == (5, 2)  # still reserved
    history = (await client.get(PAYMENTS, headers=headers)).json()["data"]
    assert [(p["status"], p["failure_reason"]) for p in history] == [("failed", reason)]

    paid = await pay(client, order["id"], headers, payment_token="tok_mastercard")
    assert paid.status_code == 201 and paid.json()["method"]["last4"] == "4444"
    assert (await order_row(services, order["id"])).payment_status == "paid"
    assert await money_problems(services) == []


async def test_bad_payment_requests_change_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, _ = await placed(client, admin)
    other = bearer(await register(client))

    unknown = await pay(client, order["id"], headers, payment_token="tok_nonsense")
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"] == ["body", "payment_token"]
    both = await pay(client, order["id"], headers, payment_token="tok_visa", payment_method_id=str(uuid.uuid4()))
    assert both.status_code == 422
    assert (await pay(client, order["id"], other)).status_code == 404  # someone else's order
    assert (await pay(client, str(uuid.uuid4()), headers)).status_code == 404
    assert await count(services, Payment) == 0 and await count(services, LedgerEntry) == 0
    assert (await order_row(services, order["id"])).payment_status == "unpaid"


async def test_a_guest_pays_with_the_order_token(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    pid = await product(client, admin, price="9.99", stock=3)
    async with guest(app) as browser:
        await add(browser, pid, 1)
        placed_ = await browser.post("/api/v1/orders", json={"shipping_address": ADDRESS, "email": "guest@example.com"})
        order = placed_.json()
        assert (await pay(browser, order["id"], {"X-Order-Token": "wrong"})).status_code == 404
        assert (await pay(browser, order["id"], {})).status_code == 404
        response = await pay(browser, order["id"], {"X-Order-Token": order["order_token"]})
    assert response.status_code == 201 and response.json()["amount"] == "9.99"
    assert (await order_row(services, order["id"])).payment_status == "paid"


async def test_idempotent_payment_and_refund(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, _ = await placed(client, admin)
    key = {"Idempotency-Key": str(uuid.uuid4())}

    first = await pay(client, order["id"], headers | key)
    replay = await pay(client, order["id"], headers | key)
    other_body = await pay(client, order["id"], headers | key, payment_token="tok_mastercard")

    assert first.status_code == replay.status_code == 201 and replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert other_body.status_code == 422 and other_body.json()["type"].endswith("/idempotency-mismatch")
    assert await count(services, Payment) == 1 and await count(services, LedgerEntry) == 1

    refund_key = admin | {"Idempotency-Key": str(uuid.uuid4())}
    url = f"/api/v1/orders/{order['id']}/refund"
    refund = await client.post(url, json={"amount": "5.00", "reason": "late"}, headers=refund_key)
    repeat = await client.post(url, json={"amount": "5.00", "reason": "late"}, headers=refund_key)
    different = await client.post(url, json={"amount": "6.00", "reason": "late"}, headers=refund_key)
    assert refund.status_code == repeat.status_code == 201 and repeat.json()["id"] == refund.json()["id"]
    assert different.status_code == 422 and different.json()["type"].endswith("/idempotency-mismatch")
    assert await count(services, Refund) == 1


async def _second_order(client: httpx.AsyncClient, headers: dict[str, str], pid: str) -> dict[str, Any]:
    """Another pending order of the same customer (one unit of ``pid``)."""
    await add(client, pid, 1, headers)
    response = await client.post("/api/v1/orders", json={"shipping_address": ADDRESS}, headers=headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_a_key_used_by_a_declined_payment_refuses_another_body(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """API.md §1: same key + different body → 422 ``idempotency-mismatch``, also after a declined first attempt
    (whose key is released for a retry of the *same* request, not for another order or card)."""
    order, headers, pid = await placed(client, admin)
    second = await _second_order(client, headers, pid)
    key = headers | {"Idempotency-Key": str(uuid.uuid4())}
    declined = await pay(client, order["id"], key, payment_token="tok_chargeDeclined")
    assert declined.status_code == 402, declined.text

    other_order = await pay(client, second["id"], key)
    other_card = await pay(client, order["id"], key, payment_token="tok_visa")
    same = await pay(client, order["id"], key, payment_token="tok_chargeDeclined")

    for refused in (other_order, other_card):
        assert refused.status_code == 422, refused.text
        assert refused.json()["type"].endswith("/idempotency-mismatch")
    assert same.status_code == 402 and same.json()["payment_id"] == declined.json()["payment_id"]
    assert (await order_row(services, order["id"])).payment_status == "failed"
    assert (await order_row(services, second["id"])).payment_status == "unpaid"
    assert await count(services, Payment) == 1 and await count(services, LedgerEntry) == 1
    fresh = await pay(client, second["id"], headers | {"Idempotency-Key": str(uuid.uuid4())})
    assert fresh.status_code == 201 and fresh.json()["order_id"] == second["id"]
    assert await money_problems(services) == []


async def test_a_key_used_by_a_timed_out_payment_never_pays_another_order(
    migrated: Backend, client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """A retry after a timeout re-asks the gateway under the first attempt: with another body it must be refused,
    not charge the first order (with the second request's card)."""
    order, headers, pid = await placed(client, admin)
    second = await _second_order(client, headers, pid)
    key = headers | {"Idempotency-Key": str(uuid.uuid4())}
    slow = _slow(migrated, gateway_timeout=0.2, test_gateway_delay=2)  # nothing booked: the call is cancelled
    try:
        async with _client_of(slow) as slow_client:
            assert (await pay(slow_client, order["id"], key)).status_code == 503
    finally:
        await slow.close()

    other_order = await pay(client, second["id"], key)

    assert other_order.status_code == 422, other_order.text
    assert other_order.json()["type"].endswith("/idempotency-mismatch")
    assert (await order_row(services, order["id"])).payment_status == "unpaid"
    assert (await order_row(services, second["id"])).payment_status == "unpaid"
    assert await count(services, LedgerEntry) == 0
    retried = await pay(client, order["id"], key)  # the same request still finishes its own attempt
    assert retried.status_code == 201 and retried.json()["order_id"] == order["id"]
    assert await count(services, Payment) == 1 and await money_problems(services) == []


async def test_a_key_used_by_a_timed_out_refund_refuses_another_body(
    migrated: Backend, client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """Both refund routes: after a 503 the key finishes its own pending refund; another amount, reason or
    order/payment with the same key → 422, and only the first refund is ever made."""
    order, headers, _ = await placed(client, admin)
    payment = (await pay(client, order["id"], headers)).json()
    other, other_headers, _ = await placed(client, admin)
    assert (await pay(client, other["id"], other_headers)).status_code == 201
    order_url, other_url = f"/api/v1/orders/{order['id']}/refund", f"/api/v1/orders/{other['id']}/refund"
    payment_url = f"{PAYMENTS}/{payment['id']}/refund"
    key = admin | {"Idempotency-Key": str(uuid.uuid4())}
    payment_key = admin | {"Idempotency-Key": str(uuid.uuid4())}
    partial = {"amount": "3.00", "reason": "x"}
    slow = _slow(migrated, gateway_timeout=0.2, test_gateway_delay=2)
    try:
        async with _client_of(slow) as slow_client:
            first = await slow_client.post(order_url, json={"amount": "5.00", "reason": "late"}, headers=key)
            by_payment = await slow_client.post(payment_url, json=partial, headers=payment_key)
    finally:
        await slow.close()
    assert first.status_code == by_payment.status_code == 503

    refused = [
        await client.post(order_url, json={"amount": "6.00", "reason": "late"}, headers=key),
        await client.post(order_url, json={"amount": "5.00", "reason": "other"}, headers=key),
        await client.post(other_url, json={"amount": "5.00", "reason": "late"}, headers=key),
        await client.post(payment_url, json={"amount": "4.00", "reason": "x"}, headers=payment_key),
    ]
    for answer in refused:
        assert answer.status_code == 422, answer.text
        assert answer.json()["type"].endswith("/idempotency-mismatch")
    retried = await client.post(order_url, json={"amount": "5.00", "reason": "late"}, headers=key)
    retried_payment = await client.post(payment_url, json=partial, headers=payment_key)

    assert retried.status_code == 201 and retried.json()["amount"] == "5.00"
    assert retried_payment.status_code == 201 and retried_payment.json()["amount"] == "3.00"
    async with services.db.session(write=False) as session:
        refunds = sorted((r.order_id, r.amount, r.status) for r in await session.scalars(select(Refund)))
    assert refunds == [
        (uuid.UUID(order["id"]), Decimal("3.00"), "completed"),
        (uuid.UUID(order["id"]), Decimal("5.00"), "completed"),
    ]
    assert (await order_row(services, other["id"])).payment_status == "paid"
    assert await money_problems(services) == []


async def test_refunds_partial_full_restock_and_limits(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, pid = await placed(client, admin)
    payment = (await pay(client, order["id"], headers)).json()
    url = f"/api/v1/orders/{order['id']}/refund"
    assert (await client.post(f"/api/v1/orders/{order['id']}/ship", json={}, headers=admin)).status_code == 200

    assert (await client.post(url, json={"amount": "1.00", "reason": "x"}, headers=headers)).status_code == 403
    too_much = await client.post(url, json={"amount": "40.01", "reason": "x"}, headers=admin)
    assert too_much.status_code == 422 and too_much.json()["errors"][0]["loc"] == ["body", "amount"]

    partial = await client.post(url, json={"amount": "15.00", "reason": "scratched", "restock": True}, headers=admin)
    assert partial.status_code == 201, partial.text
    assert (partial.json()["amount"], partial.json()["status"], partial.json()["restock"]) == (
        "15.00",
        "completed",
        True,
    )
    assert (await order_row(services, order["id"])).payment_status == "partially_refunded"
    assert await stock(services, pid) == (5, 0)  # both units back on hand
    async with services.db.session(write=False) as session:
        reasons = list(
            await session.scalars(select(InventoryHistory.reason).where(InventoryHistory.reference == order["number"]))
        )
    assert "order.refunded" in reasons
    twice = await client.post(url, json={"amount": "1.00", "reason": "x", "restock": True}, headers=admin)
    assert twice.status_code == 422 and twice.json()["errors"][0]["loc"] == ["body", "restock"]

    over = await client.post(
        f"{PAYMENTS}/{payment['id']}/refund", json={"amount": "25.01", "reason": "x"}, headers=admin
    )
    assert over.status_code == 422
    rest = await client.post(f"{PAYMENTS}/{payment['id']}/refund", json={"reason": "goodwill"}, headers=admin)
    assert rest.status_code == 201 and rest.json()["amount"] == "25.00"
    settled = (await client.get(f"{PAYMENTS}/{payment['id']}", headers=headers)).json()
    assert (settled["status"], settled["refunded_amount"]) == ("refunded", "40.00")
    assert (await order_row(services, order["id"])).payment_status == "refunded"
    events = (await client.get(f"/api/v1/orders/{order['id']}/events", headers=headers)).json()["data"]
    assert [e["type"] for e in events].count("order.refunded") == 2
    refund_mail = [m for m in await sent_mail(services, order["customer_email"]) if "Refund" in str(m["Subject"])]
    assert len(refund_mail) == 2 and "25.00 USD" in refund_mail[-1].get_content()
    nothing_left = await client.post(url, json={"reason": "again"}, headers=admin)
    assert nothing_left.status_code == 422
    assert await money_problems(services) == []


async def test_a_fully_refunded_order_cannot_ship_but_can_be_cancelled(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, pid = await placed(client, admin)
    assert (await pay(client, order["id"], headers)).status_code == 201
    refunded = await client.post(f"/api/v1/orders/{order['id']}/refund", json={"reason": "changed mind"}, headers=admin)
    assert refunded.status_code == 201 and refunded.json()["amount"] == "40.00"
    for ship in (
        client.post(f"/api/v1/orders/{order['id']}/ship", json={}, headers=admin),
        client.put(f"/api/v1/orders/{order['id']}/status", json={"status": "shipped"}, headers=admin),
    ):
        refused = await ship
        assert refused.status_code == 409, refused.text
        assert "fully refunded" in refused.json()["detail"]
    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status) == ("processing", "refunded")
    cancelled = await client.post(f"/api/v1/orders/{order['id']}/cancel", json={}, headers=admin)
    assert cancelled.status_code == 200, cancelled.text
    assert await stock(services, pid) == (5, 0)  # the committed units are back on hand
    assert await money_problems(services) == []


async def test_cancelling_a_paid_order_refunds_it_in_full(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, pid = await placed(client, admin)
    await pay(client, order["id"], headers)

    cancelled = await client.delete(f"/api/v1/orders/{order['id']}", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    await services.jobs.run_due()

    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status) == ("cancelled", "refunded")
    assert await stock(services, pid) == (5, 0)
    history = (await client.get(PAYMENTS, headers=headers)).json()["data"]
    assert [(p["status"], p["refunded_amount"]) for p in history] == [("refunded", "40.00")]
    async with services.db.session(write=False) as session:
        refunds = list(await session.scalars(select(Refund)))
    assert [(r.amount, r.reason, r.status) for r in refunds] == [(row.total, "order cancelled", "completed")]
    await services.jobs.run_due()  # a repeat refunds nothing more
    assert await count(services, Refund) == 1 and await money_problems(services) == []


async def test_a_refused_refund_of_a_cancelled_order_is_retried_then_dead_and_reported(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services, migrated: Backend
) -> None:
    """The gateway refuses the cancelled order's refund (5.00 of the charge was refunded in the gateway's
    dashboard, so the full 40.00 is too much): each attempt is recorded as a failed refund, the job retries with
    backoff and ends dead, and ``mercato check`` names the order that still holds the money and the dead job."""
    order, headers, _ = await placed(client, admin)
    paid = (await pay(client, order["id"], headers)).json()
    async with services.db.session(write=True) as session:
        session.add(
            LedgerEntry(
                kind="refund",
                key="dashboard-refund",
                reference="re_dashboard",
                parent=paid["gateway_reference"],
                amount=Decimal("5.00"),
                currency="USD",
                status="succeeded",
            )
        )
    cancelled = await client.delete(f"/api/v1/orders/{order['id']}", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    runner = _slow(migrated, job_max_attempts=3)
    name = "payments.refund_cancelled_order"
    now = clock.now()
    try:
        for attempt in (1, 2, 3):
            clock.set_clock(lambda at=now: at)
            await runner.jobs.run_due()
            async with services.db.session(write=False) as session:
                job = (await session.execute(select(Job).where(Job.name == name))).scalar_one()
            assert (job.attempts, job.status) == (attempt, "queued" if attempt < 3 else "dead")
            assert job.last_error == (
                f"RefundFailed: The gateway refused the refund of 40.00 USD for cancelled order {order['number']}: "
                "amount_too_large."
            )
            if attempt < 3:
                assert job.run_at == now + timedelta(seconds=2**attempt)  # backoff
                now = job.run_at
        assert await runner.jobs.run_due() == 0  # dead: never run again
    finally:
        clock.set_clock(None)
        await runner.close()

    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status) == ("cancelled", "paid")
    async with services.db.session(write=False) as session:
        refunds = list(await session.scalars(select(Refund)))
    assert [(r.amount, r.status, r.failure_reason) for r in refunds] == [
        (Decimal("40.00"), "failed", "amount_too_large")
    ] * 3
    assert await count(services, LedgerEntry, LedgerEntry.status == "succeeded") == 2  # the charge, the dashboard's
    async with services.db.session(write=False) as session:
        checks = all_checks()
        left = await checks["payments.cancelled_orders_refunded"](session)
        dead = await checks["jobs.none_dead"](session)
    assert left == [
        f"order {order['number']}: cancelled but payment_status paid, still holding 40.00 USD; "
        "last refund refused: amount_too_large"
    ]
    assert dead == [f"job {job.id} ({name}) dead after 3 attempts: {job.last_error}"]
    assert await money_problems(services) == []  # what the books say is consistent: only the refund is missing


async def test_a_cancelled_order_whose_refund_is_under_way_is_not_reported(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """Between the cancellation and its refund job, and once refunded, the order is no problem."""
    order, headers, _ = await placed(client, admin)
    await pay(client, order["id"], headers)
    await client.delete(f"/api/v1/orders/{order['id']}", headers=headers)

    async def reported() -> list[str]:
        async with services.db.session(write=False) as session:
            checks = all_checks()
            return [
                *await checks["payments.cancelled_orders_refunded"](session),
                *await checks["jobs.none_dead"](session),
            ]

    assert (await order_row(services, order["id"])).payment_status == "paid" and await reported() == []
    await services.jobs.run_due()
    assert (await order_row(services, order["id"])).payment_status == "refunded" and await reported() == []


async def test_saved_cards_are_encrypted_and_pay(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, _ = await placed(client, admin)
    saved = await client.post(f"{PAYMENTS}/methods", json={"payment_token": "tok_mastercard"}, headers=headers)
    assert saved.status_code == 201, saved.text
    card = saved.json()
    assert (card["brand"], card["last4"], card["exp_month"], card["exp_year"], card["is_default"]) == (
        "mastercard",
        "4444",
        12,
        2034,
        True,
    )
    async with services.db.session(write=False) as session:
        row = await session.get(PaymentMethod, uuid.UUID(card["id"]))
        assert row is not None and "tok_" not in row.token_encrypted
    second = (
        await client.post(
            f"{PAYMENTS}/methods", json={"payment_token": "tok_visa", "is_default": True}, headers=headers
        )
    ).json()
    listed = (await client.get(f"{PAYMENTS}/methods", headers=headers)).json()
    assert [(m["id"], m["is_default"]) for m in listed["data"]] == [(second["id"], True), (card["id"], False)]
    assert listed["pagination"]["total"] == 2
    assert (
        await client.post(f"{PAYMENTS}/methods", json={"payment_token": "4242424242424242"}, headers=headers)
    ).status_code == 422

    other = bearer(await register(client))
    assert (await client.delete(f"{PAYMENTS}/methods/{card['id']}", headers=other)).status_code == 404
    paid = await pay(client, order["id"], headers, payment_method_id=card["id"])
    assert paid.status_code == 201 and paid.json()["method"] == {"brand": "mastercard", "last4": "4444"}
    assert (await client.delete(f"{PAYMENTS}/methods/{card['id']}", headers=headers)).status_code == 204
    assert [m["id"] for m in (await client.get(f"{PAYMENTS}/methods", headers=headers)).json()["data"]] == [
        second["id"]
    ]
    other_order, stranger_headers, _ = await placed(client, admin)
    theirs = await pay(client, other_order["id"], stranger_headers, payment_method_id=second["id"])
    assert theirs.status_code == 404 and theirs.json()["type"].endswith("/not-found")


async def test_a_card_saved_under_an_earlier_secret_key_is_refused_not_a_500(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, _ = await placed(client, admin)
    card = (await client.post(f"{PAYMENTS}/methods", json={"payment_token": "tok_visa"}, headers=headers)).json()
    async with services.db.session(write=True) as session:  # as if MERCATO_SECRET_KEY had been rotated since
        row = await session.get(PaymentMethod, uuid.UUID(card["id"]))
        assert row is not None
        row.token_encrypted = vault.encrypt("an-earlier-secret-key-of-at-least-32-chars", "tok_visa")
    refused = await pay(client, order["id"], headers, payment_method_id=card["id"])
    assert refused.status_code == 404, refused.text
    assert "save it again" in refused.json()["detail"]
    assert await count(services, Payment) == 0
    assert (await pay(client, order["id"], headers)).status_code == 201  # still payable with a new card


def _signed(gateway: TestGateway, event: dict[str, Any], at: int | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, {"Mercato-Signature": gateway.sign(body, at or int(time.time())), "Content-Type": "application/json"}


async def _crashed_after_charge(services: Services, order_id: str) -> uuid.UUID:
    """What a crash between the gateway's success and our record leaves: a pending attempt the gateway charged."""
    order = await order_row(services, order_id)
    payment = Payment(
        id=clock.new_id(),
        order_id=order.id,
        user_id=order.user_id,
        amount=order.total,
        currency=order.currency,
        status="pending",
        gateway="test",
        method_brand="visa",
        method_last4="4242",
    )
    async with services.db.session(write=True) as session:
        session.add(payment)
    gateway = gateways.by_name(services, "test")
    outcome = await gateway.charge(key=str(payment.id), amount=order.total, currency=order.currency, token="tok_visa")
    assert outcome.status == "succeeded"
    return payment.id


async def test_webhooks_are_verified_and_reconcile_once(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, customer, _ = await placed(client, admin)
    payment_id = await _crashed_after_charge(services, order["id"])
    gateway = gateways.by_name(services, "test")
    assert isinstance(gateway, TestGateway)
    event = {"id": "evt_1", "type": "charge.succeeded", "data": {"key": str(payment_id)}}
    url = f"{PAYMENTS}/webhooks/test"

    body, signed = _signed(gateway, event)
    genuine = signed["Mercato-Signature"]
    tampered = genuine[:-1] + ("0" if genuine[-1] != "0" else "1")  # always differs (a fixed "00" matched 1 in 256)
    forged = await client.post(url, content=body, headers=signed | {"Mercato-Signature": tampered})
    stale_body, stale = _signed(gateway, event, at=int(time.time()) - 301)
    old = await client.post(url, content=stale_body, headers=stale)
    missing = await client.post(url, content=body, headers={"Content-Type": "application/json"})
    assert (forged.status_code, old.status_code, missing.status_code) == (401, 401, 400)
    assert (await order_row(services, order["id"])).payment_status == "unpaid"  # nothing changed
    assert (await client.post(f"{PAYMENTS}/webhooks/nope", content=body, headers=signed)).status_code == 404

    accepted = await client.post(url, content=body, headers=signed)
    replayed = await client.post(url, content=body, headers=signed)

    assert accepted.status_code == 200 and accepted.json() == {"received": True, "duplicate": False}
    assert replayed.json() == {"received": True, "duplicate": True}
    row = (await client.get(f"/api/v1/orders/{order['id']}", headers=customer)).json()
    assert (row["status"], row["payment_status"]) == ("processing", "paid")
    assert await count(services, Payment, Payment.status == "completed") == 1
    assert await count(services, LedgerEntry) == 1 and await money_problems(services) == []


async def test_the_reconcile_job_records_a_charge_a_crash_left_unrecorded(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, _ = await placed(client, admin)
    payment_id = await _crashed_after_charge(services, order["id"])
    assert (await pay(client, order["id"], headers)).status_code == 409  # in progress: never a second charge

    assert await payments.reconcile_payment(services, payment_id) == "settled"
    assert await payments.reconcile_payment(services, payment_id) == "nothing"  # repeats change nothing

    assert (await order_row(services, order["id"])).payment_status == "paid"
    assert await count(services, LedgerEntry) == 1 and await money_problems(services) == []


async def test_a_gateway_timeout_answers_503_and_leaves_the_order_payable(
    migrated: Backend, client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, pid = await placed(client, admin)
    slow = Services.build(migrated.settings(gateway_timeout=0.2, test_gateway_delay=2), cache_prefix=migrated.prefix)
    try:
        transport = httpx.ASGITransport(app=create_app(slow.settings, services=slow), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as slow_client:
            timed_out = await pay(slow_client, order["id"], headers)
    finally:
        await slow.close()

    assert timed_out.status_code == 503 and timed_out.json()["type"].endswith("/service-unavailable")
    assert timed_out.headers["retry-after"] == "5"  # RFC 9110 §10.2.3: when to try again
    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status) == ("pending", "unpaid") and await stock(services, pid) == (5, 2)
    assert await count(services, LedgerEntry) == 0  # the cancelled call charged nothing
    assert await count(services, Job, Job.name == "payments.reconcile") == 1  # asks the gateway again later
    paid = await pay(client, order["id"], headers)
    assert paid.status_code == 201 and (await order_row(services, order["id"])).payment_status == "paid"
    assert await money_problems(services) == []


async def test_a_charge_that_lands_after_the_timeout_is_never_lost(
    migrated: Backend, client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    first, headers, _ = await placed(client, admin)
    second, headers2, _ = await placed(client, admin)
    late = Services.build(migrated.settings(gateway_timeout=0.3, test_gateway_hold=2), cache_prefix=migrated.prefix)
    try:
        transport = httpx.ASGITransport(app=create_app(late.settings, services=late), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as late_client:
            assert (await pay(late_client, first["id"], headers)).status_code == 503
            assert (await pay(late_client, second["id"], headers2)).status_code == 503
    finally:
        await late.close()
    assert await count(services, LedgerEntry, LedgerEntry.kind == "charge") == 2  # both charged after all
    # the customer of the second order paid again meanwhile
    assert (await pay(client, second["id"], headers2)).status_code == 201

    async with services.db.session(write=False) as session:
        attempts = {
            p.order_id: p.id
            for p in await session.scalars(select(Payment).where(Payment.failure_reason == "gateway_timeout"))
        }
    assert await payments.reconcile_payment(services, attempts[uuid.UUID(first["id"])]) == "late-charge"
    assert await payments.reconcile_payment(services, attempts[uuid.UUID(second["id"])]) == "late-charge"
    await services.jobs.run_due()  # the orphan charge's refund

    assert (await order_row(services, first["id"])).payment_status == "paid"  # the late charge paid it
    second_payments = (await client.get(PAYMENTS, params={"order_id": second["id"]}, headers=headers2)).json()["data"]
    assert sorted((p["status"], p["refunded_amount"]) for p in second_payments) == [
        ("completed", "0.00"),
        ("refunded", "40.00"),
    ]
    assert (await order_row(services, second["id"])).payment_status == "paid"
    assert await money_problems(services) == []


async def test_money_check_reports_an_order_whose_money_does_not_add_up(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, _ = await placed(client, admin)
    await pay(client, order["id"], headers)
    async with services.db.session(write=True) as session:
        row = await session.get(Order, uuid.UUID(order["id"]))
        assert row is not None
        row.payment_status = "refunded"

    problems = await money_problems(services)

    assert len(problems) == 1 and order["number"] in problems[0]


async def test_an_order_confirmed_unpaid_by_staff_takes_its_payment_later_without_moving_stock_twice(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, pid = await placed(client, admin)
    confirmed = await client.post(f"/api/v1/orders/{order['id']}/confirm", json={}, headers=admin)
    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["status"], confirmed.json()["payment_status"]) == ("processing", "unpaid")
    assert await stock(services, pid) == (3, 0)

    paid = await pay(client, order["id"], headers)

    assert paid.status_code == 201, paid.text
    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status) == ("processing", "paid")
    assert await stock(services, pid) == (3, 0)  # committed once, at confirmation
    assert await money_problems(services) == []


def _slow(migrated: Backend, **settings: Any) -> Services:
    """A second app's services on the same database with other gateway settings (timeouts, holds)."""
    return Services.build(migrated.settings(**settings), cache_prefix=migrated.prefix)


def _client_of(services: Services) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(services.settings, services=services), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_retrying_a_timed_out_payment_with_its_key_never_charges_twice(
    migrated: Backend, client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, _ = await placed(client, admin)
    key = headers | {"Idempotency-Key": str(uuid.uuid4())}
    late = _slow(migrated, gateway_timeout=0.3, test_gateway_hold=2)  # books the charge, answers too late
    try:
        async with _client_of(late) as late_client:
            assert (await pay(late_client, order["id"], key)).status_code == 503
    finally:
        await late.close()

    retried = await pay(client, order["id"], key)

    assert retried.status_code == 201, retried.text
    assert await count(services, LedgerEntry, LedgerEntry.kind == "charge") == 1
    assert await count(services, Payment) == 1 and (await order_row(services, order["id"])).payment_status == "paid"
    assert (await pay(client, order["id"], key)).json()["id"] == retried.json()["id"]  # replayed
    assert await money_problems(services) == []


async def test_retrying_a_timed_out_refund_with_its_key_refunds_once(
    migrated: Backend, client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, _ = await placed(client, admin)
    await pay(client, order["id"], headers)
    url = f"/api/v1/orders/{order['id']}/refund"
    key = admin | {"Idempotency-Key": str(uuid.uuid4())}
    slow = _slow(migrated, gateway_timeout=0.3, test_gateway_delay=2)
    try:
        async with _client_of(slow) as slow_client:
            timed_out = await slow_client.post(url, json={"amount": "5.00", "reason": "late"}, headers=key)
    finally:
        await slow.close()
    assert timed_out.status_code == 503

    retried = await client.post(url, json={"amount": "5.00", "reason": "late"}, headers=key)
    await services.jobs.run_due()

    assert retried.status_code == 201 and retried.json()["status"] == "completed"
    assert await count(services, Refund) == 1
    payment = (await client.get(PAYMENTS, headers=headers)).json()["data"][0]
    assert (payment["status"], payment["refunded_amount"]) == ("partially_refunded", "5.00")
    assert await money_problems(services) == []


async def test_a_decline_never_unpays_an_order_a_late_charge_paid(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, _ = await placed(client, admin)
    first = await _crashed_after_charge(services, order["id"])
    second = clock.new_id()  # another attempt, still at the gateway
    async with services.db.session(write=True) as session:
        row = await session.get(Order, uuid.UUID(order["id"]))
        assert row is not None
        session.add(
            Payment(
                id=second,
                order_id=row.id,
                user_id=row.user_id,
                amount=row.total,
                currency="USD",
                status="pending",
                gateway="test",
                method_brand="visa",
                method_last4="0002",
            )
        )
    assert await payments.reconcile_payment(services, first) == "settled"  # the first charge pays the order

    declined = Outcome("failed", None, Decimal("40.00"), "card_declined")
    await payments._settle_payment(services, second, declined, actor_id=None)

    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status) == ("processing", "paid")
    assert (await pay(client, order["id"], headers)).status_code == 409
    assert await money_problems(services) == []


@pytest.mark.parametrize("surplus", ["pending", "charged, its refund pending"])
async def test_a_full_refund_refunds_and_restocks_the_order_whatever_a_surplus_charge_holds(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services, surplus: str
) -> None:
    """An order paid by one attempt while a second (surplus) attempt is still at the gateway, or charged and
    waiting for its automatic refund: refunding everything the order captured makes it ``refunded`` and puts its
    units back (API.md: restock on a shipped order), and the surplus is given back too, without touching the
    order again."""
    order, headers, pid = await placed(client, admin)
    paid = (await pay(client, order["id"], headers)).json()
    second = await _crashed_after_charge(services, order["id"])  # pending here, charged at the gateway
    if surplus != "pending":
        assert await payments.reconcile_payment(services, second) == "settled"  # surplus: its refund queued
    assert (await client.post(f"/api/v1/orders/{order['id']}/ship", json={}, headers=admin)).status_code == 200
    assert await stock(services, pid) == (3, 0)

    refund = await client.post(
        f"/api/v1/orders/{order['id']}/refund", json={"reason": "lost in transit", "restock": True}, headers=admin
    )

    assert refund.status_code == 201, refund.text
    assert (refund.json()["payment_id"], refund.json()["amount"]) == (paid["id"], "40.00")
    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status) == ("shipped", "refunded")
    assert await stock(services, pid) == (5, 0)
    if surplus == "pending":
        assert await payments.reconcile_payment(services, second) == "settled"  # it lands: refunded in full
    await services.jobs.run_due()
    history = (await client.get(PAYMENTS, params={"order_id": order["id"]}, headers=headers)).json()["data"]
    assert sorted((p["status"], p["refunded_amount"]) for p in history) == [("refunded", "40.00")] * 2
    events = (await client.get(f"/api/v1/orders/{order['id']}/events", headers=headers)).json()["data"]
    refunded = [e["data"] for e in events if e["type"] == "order.refunded"]
    assert [(e["refund_id"], e["restock"]) for e in refunded] == [(refund.json()["id"], True)]
    assert await stock(services, pid) == (5, 0)  # restocked once
    assert (await order_row(services, order["id"])).payment_status == "refunded"
    assert await money_problems(services) == []


async def test_restock_only_for_orders_whose_units_left_and_cancel_never_restocks_twice(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, pid = await placed(client, admin)
    await pay(client, order["id"], headers)
    url = f"/api/v1/orders/{order['id']}/refund"
    processing = await client.post(url, json={"amount": "5.00", "reason": "x", "restock": True}, headers=admin)
    assert processing.status_code == 422 and processing.json()["errors"][0]["loc"] == ["body", "restock"]
    assert await stock(services, pid) == (3, 0)

    cancelled = await client.delete(f"/api/v1/orders/{order['id']}", headers=headers)  # units back once
    await services.jobs.run_due()
    assert cancelled.status_code == 200 and await stock(services, pid) == (5, 0)
    assert (await order_row(services, order["id"])).payment_status == "refunded"

    shipped_order, shipped_headers, shipped_pid = await placed(client, admin)
    await pay(client, shipped_order["id"], shipped_headers)
    ship = await client.post(f"/api/v1/orders/{shipped_order['id']}/ship", json={"carrier": "DHL"}, headers=admin)
    assert ship.status_code == 200
    returned = await client.post(
        f"/api/v1/orders/{shipped_order['id']}/refund", json={"reason": "lost", "restock": True}, headers=admin
    )
    assert returned.status_code == 201 and await stock(services, shipped_pid) == (5, 0)
    assert (await client.delete(f"/api/v1/orders/{shipped_order['id']}", headers=shipped_headers)).status_code == 409
    assert await money_problems(services) == []


async def test_an_order_cancelled_while_the_card_is_charged_is_refunded_and_the_payer_told(
    migrated: Backend, client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, pid = await placed(client, admin)
    held = _slow(migrated, gateway_timeout=10, test_gateway_hold=1)
    try:
        async with _client_of(held) as held_client:
            paying = asyncio.create_task(pay(held_client, order["id"], headers))
            while await count(services, LedgerEntry) == 0:  # noqa: ASYNC110 - polling the gateway's ledger
                await asyncio.sleep(0.02)
            cancelled = await client.delete(f"/api/v1/orders/{order['id']}", headers=headers)
            answer = await paying
    finally:
        await held.close()
    await services.jobs.run_due()

    assert cancelled.status_code == 200
    assert answer.status_code == 409 and "refunded" in answer.json()["detail"]
    history = (await client.get(PAYMENTS, headers=headers)).json()["data"]
    assert [(p["status"], p["refunded_amount"]) for p in history] == [("refunded", "40.00")]
    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status) == ("cancelled", "unpaid") and await stock(services, pid) == (5, 0)
    assert await money_problems(services) == []


async def test_only_one_of_concurrent_payments_charges(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, _ = await placed(client, admin)

    answers = await asyncio.gather(*(pay(client, order["id"], headers) for _ in range(6)))

    assert sorted(a.status_code for a in answers).count(201) == 1
    assert {a.status_code for a in answers} <= {201, 409}
    assert await count(services, LedgerEntry) == 1 and await count(services, Payment) == 1
    assert await money_problems(services) == []


async def test_a_webhook_that_could_not_be_handled_is_not_marked_seen(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, _, _ = await placed(client, admin)
    orphan = clock.new_id()
    async with services.db.session(write=True) as session:
        row = await session.get(Order, uuid.UUID(order["id"]))
        assert row is not None
        session.add(
            Payment(
                id=orphan,
                order_id=row.id,
                amount=row.total,
                currency="USD",
                status="pending",
                gateway="stripe",
                method_brand="visa",
                method_last4="4242",
            )
        )  # a gateway this server is not configured for: handling fails
    gateway = gateways.by_name(services, "test")
    assert isinstance(gateway, TestGateway)
    body, signed = _signed(gateway, {"id": "evt_9", "type": "charge.succeeded", "data": {"key": str(orphan)}})

    first = await client.post(f"{PAYMENTS}/webhooks/test", content=body, headers=signed)
    again = await client.post(f"{PAYMENTS}/webhooks/test", content=body, headers=signed)

    assert first.status_code == again.status_code == 503  # the redelivery is handled again, not "duplicate"
    assert await count(services, WebhookEvent) == 0


async def test_a_free_order_is_paid_at_placement(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    coupon = {"code": "FREE100", "type": "percentage", "value": "100"}
    assert (await client.post("/api/v1/coupons", json=coupon, headers=admin)).status_code == 201
    pid = await product(client, admin, price="8.00", stock=3)
    headers = bearer(await register(client))
    await add(client, pid, 1, headers)
    assert (
        await client.post("/api/v1/cart/apply-coupon", json={"code": "FREE100"}, headers=headers)
    ).status_code == 200

    order = (await client.post("/api/v1/orders", json={"shipping_address": ADDRESS}, headers=headers)).json()

    assert (order["total"], order["status"], order["payment_status"]) == ("0.00", "processing", "paid")
    assert await stock(services, pid) == (2, 0)
    assert (await pay(client, order["id"], headers)).status_code == 409
    assert await count(services, Payment) == 0 and await money_problems(services) == []


async def run_jobs_at(services: Services, at: datetime) -> int:
    """Run the jobs due at ``at`` (UTC) as the clock then reads; returns how many ran."""
    clock.set_clock(lambda: at)
    try:
        return await services.jobs.run_due()
    finally:
        clock.set_clock(None)


async def test_a_payment_in_flight_at_the_reservation_deadline_keeps_the_order(
    migrated: Backend, client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """The customer pays a second before the reservation runs out; the gateway charges, and the expiry job runs
    while its answer is on the way. The order is not cancelled under the charge: the payment answers 201, the
    order is paid with its reserved units sold, nothing is refunded, and the expiry job looks again later and
    leaves the paid order alone."""
    order, headers, pid = await placed(client, admin)
    await services.jobs.run_due()  # the confirmation email
    deadline = datetime.fromisoformat(order["reservation_expires_at"])
    held = _slow(migrated, gateway_timeout=10, test_gateway_hold=1)  # books the charge, answers a second later
    try:
        clock.set_clock(lambda: deadline - timedelta(seconds=1))
        async with _client_of(held) as held_client:
            paying = asyncio.create_task(pay(held_client, order["id"], headers))
            while await count(services, LedgerEntry) == 0:  # noqa: ASYNC110 - polling the gateway's ledger
                await asyncio.sleep(0.02)
            clock.set_clock(lambda: deadline + timedelta(seconds=1))
            await services.jobs.run_due()  # the expiry job (the payment's reconcile job is not due yet)
            rechecks = await count(services, Job, Job.name == "orders.expire")
            answer = await paying
    finally:
        clock.set_clock(None)
        await held.close()

    assert answer.status_code == 201, answer.text
    assert rechecks == 1  # the expiry job looks again later
    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status, row.cancel_reason) == ("processing", "paid", None)
    assert await stock(services, pid) == (3, 0)  # the reserved units are sold, not released
    await run_jobs_at(services, deadline + timedelta(hours=2))  # the later look changes nothing
    events = (await client.get(f"/api/v1/orders/{order['id']}/events", headers=headers)).json()["data"]
    assert [(e["type"], e["status"]) for e in events] == [("order.placed", "pending"), ("order.paid", "processing")]
    row = await order_row(services, order["id"])
    assert (row.status, row.payment_status) == ("processing", "paid") and await stock(services, pid) == (3, 0)
    assert await count(services, Refund) == 0 and await count(services, LedgerEntry) == 1
    assert await count(services, Job, Job.name == "orders.expire") == 0
    assert await money_problems(services) == []


async def test_a_declined_order_keeps_its_reservation_until_it_expires(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    order, headers, pid = await placed(client, admin)
    assert (await pay(client, order["id"], headers, payment_token="tok_chargeDeclined")).status_code == 402
    assert await stock(services, pid) == (5, 2)

    await run_jobs_after_reservation_ttl(services)

    row = await order_row(services, order["id"])
    assert (row.status, row.cancel_reason, row.payment_status) == ("cancelled", "expired", "failed")
    assert await stock(services, pid) == (5, 0)
    assert (await pay(client, order["id"], headers)).status_code == 409  # an expired order takes no payment
    assert await count(services, LedgerEntry, LedgerEntry.status == "succeeded") == 0
