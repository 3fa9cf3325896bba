"""Crash test (issue 5): the server process is killed with SIGKILL right after the gateway accepted a charge
and before Mercato recorded it; after a restart, the reconcile job asks the gateway and the order ends up paid
exactly once — one charge in the gateway's ledger, one completed payment, stock committed once. On every backend."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from mercato.checks import all_checks
from mercato.identity.models import User
from mercato.inventory.models import InventoryItem
from mercato.orders.models import Order, OrderEvent
from mercato.payments.gateways.test import LedgerEntry
from mercato.payments.models import Payment
from mercato.platform.context import Services
from tests.api.test_orders import ADDRESS
from tests.conftest import STRONG_PASSWORD, Backend
from tests.integration.conftest import free_port, mercato_env
from tests.integration.test_real_server import MERCATO, Server, _stop, _wait_until_healthy

pytestmark = pytest.mark.slow
GATEWAY_TIMEOUT_S = 5  # the reconcile job is due 2 × this + 5 s after the attempt


def _start(backend: Backend, root: Path, name: str, **extra: str) -> Server:
    port = free_port()
    env = mercato_env(
        database_url=backend.url,
        data_dir=str(root / "var"),
        secret_key=backend.settings().secret,
        gateway_timeout=str(GATEWAY_TIMEOUT_S),
        job_poll_interval="0.2",
        **extra,
    )
    log = root / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(MERCATO), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log, root / "var")
    _wait_until_healthy(server)
    return server


async def _count(services: Services, model: type, *where: object) -> int:
    async with services.db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def test_a_charge_accepted_before_a_sigkill_is_recorded_once_after_restart(
    migrated: Backend, services: Services, tmp_path: Path
) -> None:
    first = _start(migrated, tmp_path, "first", test_gateway_hold="60")
    try:
        async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as http:
            email = f"crash-{uuid.uuid4().hex[:8]}@example.com"
            registered = await http.post("/api/v1/auth/register", json={"email": email, "password": STRONG_PASSWORD})
            assert registered.status_code == 201, registered.text
            async with services.db.session(write=True) as session:
                user = await session.get(User, uuid.UUID(registered.json()["user"]["id"]))
                assert user is not None
                user.role = "admin"
            login = await http.post("/api/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD})
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            created = await http.post(
                "/api/v1/products",
                json={"name": f"Crash {uuid.uuid4().hex[:6]}", "price": "12.50", "status": "active", "stock": 4},
                headers=headers,
            )
            product_id = created.json()["id"]
            await http.post("/api/v1/cart/items", json={"product_id": product_id, "quantity": 2}, headers=headers)
            order = (await http.post("/api/v1/orders", json={"shipping_address": ADDRESS}, headers=headers)).json()

            paying = asyncio.create_task(
                http.post(
                    "/api/v1/payments", json={"order_id": order["id"], "payment_token": "tok_visa"}, headers=headers
                )
            )
            deadline = time.monotonic() + 30
            while await _count(services, LedgerEntry, LedgerEntry.kind == "charge") == 0:
                assert time.monotonic() < deadline, first.log_text()
                await asyncio.sleep(0.05)
            first.process.kill()  # SIGKILL: the gateway has charged, Mercato has not recorded it
            first.process.wait(timeout=10)
            with pytest.raises(httpx.TransportError):
                await paying
    finally:
        _stop(first.process)

    async with services.db.session(write=False) as session:
        left = await session.get(Order, uuid.UUID(order["id"]))
        assert left is not None and left.payment_status == "unpaid"
        assert (await session.scalar(select(Payment.status))) == "pending"

    second = _start(migrated, tmp_path, "second")
    try:
        deadline = time.monotonic() + 4 * GATEWAY_TIMEOUT_S + 30
        async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as http:
            while True:
                current = (await http.get(f"/api/v1/orders/{order['id']}", headers=headers)).json()
                if current["payment_status"] == "paid":
                    break
                assert time.monotonic() < deadline, second.log_text()
                await asyncio.sleep(0.5)
            again = await http.post(
                "/api/v1/payments", json={"order_id": order["id"], "payment_token": "tok_visa"}, headers=headers
            )
        assert again.status_code == 409  # paid: never charged twice
        assert current["status"] == "processing"
    finally:
        _stop(second.process)

    assert await _count(services, LedgerEntry, LedgerEntry.kind == "charge") == 1
    assert await _count(services, Payment, Payment.order_id == uuid.UUID(order["id"])) == 1
    assert await _count(services, Payment, Payment.status == "completed") == 1
    assert await _count(services, OrderEvent, OrderEvent.type == "order.paid") == 1
    async with services.db.session(write=False) as session:
        on_hand, reserved = (
            await session.execute(
                select(InventoryItem.on_hand, InventoryItem.reserved).where(
                    InventoryItem.product_id == uuid.UUID(product_id)
                )
            )
        ).one()
        assert (on_hand, reserved) == (2, 0)
        assert await all_checks()["payments.money_reconciles"](session) == []
