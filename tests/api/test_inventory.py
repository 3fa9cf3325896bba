"""Inventory (API.md "Inventory" and its stock rules): levels, set/adjust/batch with history, low stock and its job,
who may do what, and the order flow's reserve/release/commit/restock, including concurrent reservations."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from mercato.errors import Conflict, ValidationFailed
from mercato.inventory import service as inventory
from mercato.inventory.errors import InsufficientStock
from mercato.inventory.models import InventoryHistory, InventoryItem
from mercato.platform.context import Services
from mercato.platform.jobs import Job
from tests.conftest import bearer, make_admin, register, user_with_role

INV = "/api/v1/inventory"
P = "/api/v1/products"


# --- helpers --------------------------------------------------------------------------------------------------


@pytest.fixture
async def admin_tokens(services: Services, client: httpx.AsyncClient) -> dict[str, Any]:
    return await make_admin(services, client)


@pytest.fixture
def admin(admin_tokens: dict[str, Any]) -> dict[str, str]:
    return bearer(admin_tokens)


async def create(client: httpx.AsyncClient, who: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": f"Thing {uuid.uuid4().hex[:6]}", "price": "10.00", "status": "active", **fields}
    response = await client.post(P, json=body, headers=who)
    assert response.status_code == 201, response.text
    return response.json()


async def stock(services: Services, product_id: str, variant_id: str | None = None) -> tuple[int, int]:
    """``(on_hand, reserved)`` straight from the database."""
    async with services.db.session(write=False) as session:
        query = select(InventoryItem.on_hand, InventoryItem.reserved).where(
            InventoryItem.product_id == uuid.UUID(product_id)
        )
        query = query.where(
            InventoryItem.variant_id.is_(None)
            if variant_id is None
            else InventoryItem.variant_id == uuid.UUID(variant_id)
        )
        row = (await session.execute(query)).one()
        return int(row[0]), int(row[1])


async def history_rows(services: Services, product_id: str | None = None) -> list[InventoryHistory]:
    async with services.db.session(write=False) as session:
        query = select(InventoryHistory).order_by(InventoryHistory.created_at, InventoryHistory.id)
        if product_id is not None:
            query = query.where(InventoryHistory.product_id == uuid.UUID(product_id))
        return list((await session.execute(query)).scalars())


async def low_stock_jobs(services: Services) -> list[dict[str, Any]]:
    async with services.db.session(write=False) as session:
        query = select(Job.payload).where(Job.name == inventory.LOW_STOCK_JOB).order_by(Job.created_at, Job.id)
        return [dict(p) for p in (await session.execute(query)).scalars()]


async def count_jobs(services: Services) -> int:
    async with services.db.session(write=False) as session:
        query = select(func.count()).select_from(Job).where(Job.name == inventory.LOW_STOCK_JOB)
        return int(await session.scalar(query) or 0)


def unit(product: dict[str, Any], quantity: int, variant: dict[str, Any] | None = None) -> inventory.StockUnit:
    return (uuid.UUID(product["id"]), uuid.UUID(variant["id"]) if variant else None, quantity)


# --- listing --------------------------------------------------------------------------------------------------


async def test_list_rows_names_filters_and_envelope(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    mug = await create(client, admin, name="Mug", sku="MUG-1", stock=5, reorder_point=2)
    tee = await create(
        client,
        admin,
        name="Tee",
        variants=[
            {"sku": "TEE-S", "name": "S", "stock": 1, "reorder_point": 3},
            {"sku": "TEE-L", "name": "L", "stock": 9},
        ],
    )
    small, large = tee["variants"]
    listed = await client.get(INV, headers=admin)
    assert listed.status_code == 200
    assert listed.json()["pagination"] == {"page": 1, "limit": 20, "total": 3, "total_pages": 1}
    assert listed.json()["data"] == [
        {
            "product_id": mug["id"],
            "variant_id": None,
            "sku": "MUG-1",
            "name": "Mug",
            "on_hand": 5,
            "reserved": 0,
            "available": 5,
            "reorder_point": 2,
            "low_stock": False,
        },
        {
            "product_id": tee["id"],
            "variant_id": small["id"],
            "sku": "TEE-S",
            "name": "Tee – S",
            "on_hand": 1,
            "reserved": 0,
            "available": 1,
            "reorder_point": 3,
            "low_stock": True,
        },
        {
            "product_id": tee["id"],
            "variant_id": large["id"],
            "sku": "TEE-L",
            "name": "Tee – L",
            "on_hand": 9,
            "reserved": 0,
            "available": 9,
            "reorder_point": 0,
            "low_stock": False,
        },
    ]

    async def skus(**params: Any) -> list[str]:
        response = await client.get(INV, headers=admin, params=params)
        assert response.status_code == 200, response.text
        return [row["sku"] for row in response.json()["data"]]

    assert await skus(sku="TEE-L") == ["TEE-L"]
    assert await skus(product_id=tee["id"]) == ["TEE-S", "TEE-L"]
    assert await skus(variant_id=small["id"]) == ["TEE-S"]
    assert await skus(low_stock="true") == ["TEE-S"]
    assert await skus(low_stock="false") == ["MUG-1", "TEE-L"]
    first = await client.get(INV, headers=admin, params={"limit": 2})
    assert [r["sku"] for r in first.json()["data"]] == ["MUG-1", "TEE-S"]
    assert 'rel="next"' in first.headers["link"]
    assert first.json()["pagination"]["total_pages"] == 2
    assert (await client.get(INV, headers=admin, params={"limit": 101})).status_code == 422
    bad = await client.get(INV, headers=admin, params={"product_id": "not-a-uuid"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["query", "product_id"]
    # a product's creation with units on hand is itself recorded
    assert {(h.reason, h.delta, h.on_hand_after) for h in await history_rows(services, mug["id"])} == {
        ("initial stock", 5, 5)
    }


# --- set, adjust, batch ---------------------------------------------------------------------------------------


async def test_put_sets_stock_records_history_and_refreshes_the_catalog(
    client: httpx.AsyncClient, admin_tokens: dict[str, Any], admin: dict[str, str], services: Services
) -> None:
    mug = await create(client, admin, name="Mug", sku="MUG-1", stock=5)
    assert (await client.get(f"{P}/{mug['id']}")).json()["stock"] == 5  # cached for the public now
    response = await client.put(
        f"{INV}/{mug['id']}", headers=admin, json={"on_hand": 12, "reorder_point": 4, "reason": "cycle count"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "product_id": mug["id"],
        "variant_id": None,
        "sku": "MUG-1",
        "name": "Mug",
        "on_hand": 12,
        "reserved": 0,
        "available": 12,
        "reorder_point": 4,
        "low_stock": False,
    }
    assert await stock(services, mug["id"]) == (12, 0)
    assert (await client.get(f"{P}/{mug['id']}")).json()["stock"] == 12  # reads see writes
    latest = (await history_rows(services, mug["id"]))[-1]
    assert (latest.delta, latest.reserved_delta, latest.on_hand_after, latest.reserved_after) == (7, 0, 12, 0)
    assert latest.reason == "cycle count"
    assert str(latest.actor_id) == admin_tokens["user"]["id"]
    # the same count again changes nothing and records nothing
    before = len(await history_rows(services))
    again = await client.put(f"{INV}/{mug['id']}", headers=admin, json={"on_hand": 12, "reason": "recount"})
    assert again.status_code == 200 and again.json()["reorder_point"] == 4
    assert len(await history_rows(services)) == before


async def test_put_refusals_change_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    mug = await create(client, admin, name="Mug", stock=5)
    tee = await create(client, admin, name="Tee", variants=[{"sku": "T-S", "name": "S", "stock": 2}])
    async with services.db.session(write=True) as session:
        await inventory.reserve(session, [unit(mug, 3)], reference="ORD-1")
    before = len(await history_rows(services))
    below_reserved = await client.put(f"{INV}/{mug['id']}", headers=admin, json={"on_hand": 2, "reason": "count"})
    assert below_reserved.status_code == 409
    assert below_reserved.json()["type"] == "https://mercato.dev/problems/insufficient-stock"
    assert below_reserved.json()["available"] == 2 and below_reserved.json()["product_id"] == mug["id"]
    needs_variant = await client.put(f"{INV}/{tee['id']}", headers=admin, json={"on_hand": 2, "reason": "count"})
    assert needs_variant.status_code == 422
    assert needs_variant.json()["errors"][0]["loc"] == ["body", "variant_id"]
    wrong_variant = await client.put(
        f"{INV}/{tee['id']}", headers=admin, json={"on_hand": 2, "variant_id": str(uuid.uuid4()), "reason": "count"}
    )
    assert wrong_variant.status_code == 404
    missing = await client.put(f"{INV}/{uuid.uuid4()}", headers=admin, json={"on_hand": 2, "reason": "count"})
    assert missing.status_code == 404
    for body, field in [
        ({"on_hand": -1, "reason": "count"}, "on_hand"),
        ({"on_hand": 1}, "reason"),
        ({"on_hand": 1, "reason": ""}, "reason"),
        ({"on_hand": 1, "reason": "x", "reserved": 0}, "reserved"),
    ]:
        refused = await client.put(f"{INV}/{mug['id']}", headers=admin, json=body)
        assert refused.status_code == 422, body
        assert refused.json()["errors"][0]["loc"] == ["body", field]
    assert await stock(services, mug["id"]) == (5, 3)
    assert len(await history_rows(services)) == before


async def test_adjust_records_history_and_refuses_going_below_zero(
    client: httpx.AsyncClient, admin_tokens: dict[str, Any], admin: dict[str, str], services: Services
) -> None:
    tee = await create(client, admin, name="Tee", variants=[{"sku": "T-S", "name": "S", "stock": 2}])
    variant = tee["variants"][0]
    added = await client.post(
        f"{INV}/adjust",
        headers=admin,
        json={"product_id": tee["id"], "variant_id": variant["id"], "delta": 5, "reason": "delivery"},
    )
    assert added.status_code == 200, added.text
    assert (added.json()["on_hand"], added.json()["available"], added.json()["name"]) == (7, 7, "Tee – S")
    removed = await client.post(
        f"{INV}/adjust",
        headers=admin,
        json={"product_id": tee["id"], "variant_id": variant["id"], "delta": -3, "reason": "damaged"},
    )
    assert removed.status_code == 200 and removed.json()["on_hand"] == 4
    rows = [h for h in await history_rows(services, tee["id"]) if h.reason in {"delivery", "damaged"}]
    assert [(h.delta, h.on_hand_after, h.reason, str(h.actor_id), str(h.variant_id)) for h in rows] == [
        (5, 7, "delivery", admin_tokens["user"]["id"], variant["id"]),
        (-3, 4, "damaged", admin_tokens["user"]["id"], variant["id"]),
    ]
    before = len(await history_rows(services))
    too_many = await client.post(
        f"{INV}/adjust",
        headers=admin,
        json={"product_id": tee["id"], "variant_id": variant["id"], "delta": -5, "reason": "damaged"},
    )
    assert too_many.status_code == 409
    assert too_many.json()["type"] == "https://mercato.dev/problems/insufficient-stock"
    assert too_many.json()["variant_id"] == variant["id"] and too_many.json()["available"] == 4
    async with services.db.session(write=True) as session:
        await inventory.reserve(session, [unit(tee, 3, variant)], reference="ORD-7")
    below_reserved = await client.post(
        f"{INV}/adjust",
        headers=admin,
        json={"product_id": tee["id"], "variant_id": variant["id"], "delta": -2, "reason": "damaged"},
    )
    assert below_reserved.status_code == 409 and below_reserved.json()["available"] == 1
    zero = await client.post(
        f"{INV}/adjust",
        headers=admin,
        json={"product_id": tee["id"], "variant_id": variant["id"], "delta": 0, "reason": "x"},
    )
    assert zero.status_code == 422 and zero.json()["errors"][0]["loc"] == ["body", "delta"]
    assert await stock(services, tee["id"], variant["id"]) == (4, 3)
    assert len(await history_rows(services)) == before + 1  # only the reservation


async def test_batch_is_all_or_nothing(client: httpx.AsyncClient, admin: dict[str, str], services: Services) -> None:
    mug = await create(client, admin, name="Mug", stock=5)
    cup = await create(client, admin, name="Cup", stock=1)
    before = len(await history_rows(services))
    failing = await client.post(
        f"{INV}/batch",
        headers=admin,
        json={
            "adjustments": [
                {"product_id": mug["id"], "delta": 10, "reason": "delivery"},
                {"product_id": cup["id"], "delta": -2, "reason": "damaged"},
                {"product_id": str(uuid.uuid4()), "delta": 1, "reason": "delivery"},
                {"product_id": mug["id"], "delta": -3, "reason": "damaged"},
            ]
        },
    )
    assert failing.status_code == 422
    assert failing.json()["type"] == "https://mercato.dev/problems/validation-error"
    assert [(e["index"], e["status"], e["type"]) for e in failing.json()["errors"]] == [
        (1, 409, "insufficient-stock"),
        (2, 404, "not-found"),
    ]
    assert await stock(services, mug["id"]) == (5, 0)
    assert await stock(services, cup["id"]) == (1, 0)
    assert len(await history_rows(services)) == before
    ok = await client.post(
        f"{INV}/batch",
        headers=admin,
        json={
            "adjustments": [
                {"product_id": mug["id"], "delta": 10, "reason": "delivery"},
                {"product_id": cup["id"], "delta": -1, "reason": "damaged"},
                {"product_id": mug["id"], "delta": -3, "reason": "damaged"},
            ]
        },
    )
    assert ok.status_code == 200, ok.text
    reference = ok.json()["reference"]
    assert [(r["name"], r["on_hand"]) for r in ok.json()["results"]] == [("Mug", 12), ("Cup", 0), ("Mug", 12)]
    assert await stock(services, mug["id"]) == (12, 0)
    logged = await client.get(f"{INV}/history", headers=admin, params={"reference": reference})
    # units are adjusted in id order (each unit's adjustments in request order): Mug's +10 comes before its -3
    assert sorted((h["delta"], h["on_hand_after"], h["reason"]) for h in logged.json()["data"]) == [
        (-3, 12, "damaged"),
        (-1, 0, "damaged"),
        (10, 15, "delivery"),
    ]
    empty = await client.post(f"{INV}/batch", headers=admin, json={"adjustments": []})
    assert empty.status_code == 422
    too_many = [{"product_id": mug["id"], "delta": 1, "reason": "x"}] * 501
    assert (await client.post(f"{INV}/batch", headers=admin, json={"adjustments": too_many})).status_code == 422


async def test_crossed_concurrent_batches_never_deadlock(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """Batches [A, B] and [B, A] sent at once, 20 times: rows are updated in unit order whatever the request order,
    so PostgreSQL never detects a deadlock (it was a 500): every batch succeeds, the stock counts each one, and the
    results stay in request order."""
    mug = await create(client, admin, name="Mug", stock=100)
    cup = await create(client, admin, name="Cup", stock=100)

    async def batch(first: dict[str, Any], second: dict[str, Any]) -> httpx.Response:
        adjustments = [
            {"product_id": first["id"], "delta": 1, "reason": "delivery"},
            {"product_id": second["id"], "delta": 1, "reason": "delivery"},
        ]
        return await client.post(f"{INV}/batch", headers=admin, json={"adjustments": adjustments})

    for _ in range(20):
        forward, backward = await asyncio.gather(batch(mug, cup), batch(cup, mug))
        for response, names in ((forward, ["Mug", "Cup"]), (backward, ["Cup", "Mug"])):
            assert response.status_code == 200, response.text
            assert [row["name"] for row in response.json()["results"]] == names
    assert await stock(services, mug["id"]) == (140, 0)
    assert await stock(services, cup["id"]) == (140, 0)
    assert len([h for h in await history_rows(services) if h.reason == "delivery"]) == 80


async def test_history_filters_and_newest_first(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    mug = await create(client, admin, name="Mug", stock=5)
    tee = await create(client, admin, name="Tee", variants=[{"sku": "T-S", "name": "S", "stock": 2}])
    variant = tee["variants"][0]
    async with services.db.session(write=True) as session:
        await inventory.reserve(session, [unit(mug, 2), unit(tee, 1, variant)], reference="ORD-9")
    response = await client.get(f"{INV}/history", headers=admin)
    assert response.status_code == 200
    data = response.json()["data"]
    assert response.json()["pagination"]["total"] == 4
    assert [h["reason"] for h in data] == ["order.placed", "order.placed", "initial stock", "initial stock"]
    by_ref = (await client.get(f"{INV}/history", headers=admin, params={"reference": "ORD-9"})).json()["data"]
    assert {(h["product_id"], h["variant_id"], h["delta"], h["reserved_delta"]) for h in by_ref} == {
        (mug["id"], None, 0, 2),
        (tee["id"], variant["id"], 0, 1),
    }
    by_variant = (await client.get(f"{INV}/history", headers=admin, params={"variant_id": variant["id"]})).json()
    assert [(h["reason"], h["on_hand_after"], h["reserved_after"]) for h in by_variant["data"]] == [
        ("order.placed", 2, 1),
        ("initial stock", 2, 0),
    ]
    by_product = (await client.get(f"{INV}/history", headers=admin, params={"product_id": mug["id"]})).json()
    assert set(by_product["data"][0]) == {
        "id",
        "product_id",
        "variant_id",
        "delta",
        "reserved_delta",
        "on_hand_after",
        "reserved_after",
        "reason",
        "reference",
        "actor_id",
        "created_at",
    }
    assert [h["reference"] for h in by_product["data"]] == ["ORD-9", None]


# --- low stock ------------------------------------------------------------------------------------------------


async def test_low_stock_listing_and_job_on_each_crossing(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    mug = await create(client, admin, name="Mug", sku="MUG-1", stock=10, reorder_point=3)
    await create(client, admin, name="Plenty", stock=50, reorder_point=3)
    await create(client, admin, name="Sold out", stock=0)  # listed as low, but never stocked: no warning

    async def adjust(delta: int) -> None:
        response = await client.post(
            f"{INV}/adjust", headers=admin, json={"product_id": mug["id"], "delta": delta, "reason": "count"}
        )
        assert response.status_code == 200, response.text

    await adjust(-5)  # 5 available: above
    assert await count_jobs(services) == 0
    assert [r["name"] for r in (await client.get(f"{INV}/low-stock", headers=admin)).json()["data"]] == ["Sold out"]
    await adjust(-2)  # 3 available: crossing
    assert await low_stock_jobs(services) == [
        {"product_id": mug["id"], "variant_id": None, "sku": "MUG-1", "available": 3, "reorder_point": 3}
    ]
    await adjust(-1)  # still low: no new warning
    async with services.db.session(write=True) as session:
        await inventory.reserve(session, [unit(mug, 1)], reference="ORD-1")  # still low
    assert await count_jobs(services) == 1
    low = await client.get(f"{INV}/low-stock", headers=admin)
    assert low.status_code == 200
    assert [(r["name"], r["available"], r["low_stock"]) for r in low.json()["data"]] == [
        ("Mug", 1, True),
        ("Sold out", 0, True),
    ]
    assert low.json()["pagination"]["total"] == 2
    await adjust(10)  # 11 available: back above
    async with services.db.session(write=True) as session:
        await inventory.reserve(session, [unit(mug, 8)], reference="ORD-2")  # 3 available: crossing again
    assert [job["available"] for job in await low_stock_jobs(services)] == [3, 3]
    # raising the reorder point over the available units is a crossing too
    off = await client.put(
        f"{INV}/{mug['id']}", headers=admin, json={"on_hand": 11, "reorder_point": 0, "reason": "rp"}
    )
    assert off.status_code == 200 and (off.json()["available"], off.json()["low_stock"]) == (2, False)
    again = await client.put(
        f"{INV}/{mug['id']}", headers=admin, json={"on_hand": 11, "reorder_point": 5, "reason": "rp"}
    )
    assert again.json()["low_stock"] is True
    assert await count_jobs(services) == 3
    # a refused change enqueues nothing
    refused = await client.post(
        f"{INV}/adjust", headers=admin, json={"product_id": mug["id"], "delta": -100, "reason": "count"}
    )
    assert refused.status_code == 409
    assert await count_jobs(services) == 3
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mercato.inventory"):
        await services.jobs.run_due()  # also sends the admin's verification email
    warnings = [
        (record.levelname.lower(), record.msg)
        for record in caplog.records
        if record.name == "mercato.inventory" and isinstance(record.msg, dict)
    ]
    assert [(level, w["sku"], w["available"], w["reorder_point"]) for level, w in warnings] == [
        ("warning", "MUG-1", 3, 3),
        ("warning", "MUG-1", 3, 3),
        ("warning", "MUG-1", 2, 5),
    ]
    assert await count_jobs(services) == 0


async def test_a_sold_out_unit_with_reorder_point_zero_is_low_stock(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """API.md: low stock is ``available ≤ reorder_point``; the default reorder point 0 makes a sold-out unit low."""
    candle = await create(client, admin, name="Candle", sku="CANDLE", stock=2)
    await create(client, admin, name="Lamp", sku="LAMP", stock=5)
    tee = await create(
        client,
        admin,
        name="Tee",
        variants=[{"sku": "TEE-S", "name": "S", "stock": 1}, {"sku": "TEE-L", "name": "L", "stock": 3}],
    )

    async def skus(path: str = f"{INV}/low-stock", **params: Any) -> list[str]:
        response = await client.get(path, headers=admin, params=params)
        assert response.status_code == 200, response.text
        assert all(row["low_stock"] is (row["available"] <= row["reorder_point"]) for row in response.json()["data"])
        return [row["sku"] for row in response.json()["data"]]

    assert await skus() == []
    sold = await client.post(
        f"{INV}/adjust", headers=admin, json={"product_id": candle["id"], "delta": -2, "reason": "sold at the fair"}
    )
    assert sold.status_code == 200, sold.text
    assert (sold.json()["available"], sold.json()["reorder_point"], sold.json()["low_stock"]) == (0, 0, True)
    async with services.db.session(write=True) as session:  # an order holds the last small tee
        await inventory.reserve(session, [unit(tee, 1, tee["variants"][0])], reference="ORD-1")

    assert await skus() == ["CANDLE", "TEE-S"]
    low = await client.get(f"{INV}/low-stock", headers=admin)
    assert low.json()["pagination"]["total"] == 2
    assert [(r["name"], r["on_hand"], r["reserved"], r["available"]) for r in low.json()["data"]] == [
        ("Candle", 0, 0, 0),
        ("Tee – S", 1, 1, 0),
    ]
    assert await skus(INV, low_stock="true") == ["CANDLE", "TEE-S"]
    assert await skus(INV, low_stock="false") == ["LAMP", "TEE-L"]
    assert await stock(services, candle["id"]) == (0, 0)
    # selling out is a crossing: staff are warned once per unit
    assert [(job["sku"], job["available"], job["reorder_point"]) for job in await low_stock_jobs(services)] == [
        ("CANDLE", 0, 0),
        ("TEE-S", 0, 0),
    ]
    restocked = await client.post(
        f"{INV}/adjust", headers=admin, json={"product_id": candle["id"], "delta": 4, "reason": "delivery"}
    )
    assert restocked.status_code == 200 and restocked.json()["low_stock"] is False
    assert await skus() == ["TEE-S"]


@given(
    before=st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 20)),
    after=st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 20)),
)
def test_low_stock_rule(before: tuple[int, int, int], after: tuple[int, int, int]) -> None:
    old = inventory.Level(before[0] + before[1], before[1], before[2])
    new = inventory.Level(after[0] + after[1], after[1], after[2])
    assert new.available == after[0]
    assert new.low == (after[0] <= after[2])
    assert inventory.crossed_low(old, new) == (new.low and not old.low)
    assert inventory.crossed_low(None, new) == (new.low and new.on_hand > 0)
    assert not inventory.crossed_low(new, new)


# --- who may do what ------------------------------------------------------------------------------------------


async def test_vendors_manage_their_own_stock_only(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    vendor_tokens = await user_with_role(services, client, "vendor")
    vendor = bearer(vendor_tokens)
    other = bearer(await user_with_role(services, client, "vendor"))
    own = await create(client, vendor, name="Own lamp", stock=4)
    theirs = await create(client, other, name="Their lamp", stock=4)
    house = await create(client, admin, name="House lamp", stock=4)
    listed = await client.get(INV, headers=vendor)
    assert listed.status_code == 200
    assert [row["name"] for row in listed.json()["data"]] == ["Own lamp"]
    assert (await client.get(INV, headers=vendor, params={"product_id": theirs["id"]})).json()["data"] == []
    put = await client.put(f"{INV}/{own['id']}", headers=vendor, json={"on_hand": 9, "reason": "count"})
    assert put.status_code == 200 and put.json()["on_hand"] == 9
    adjusted = await client.post(
        f"{INV}/adjust", headers=vendor, json={"product_id": own["id"], "delta": -1, "reason": "broken"}
    )
    assert adjusted.status_code == 200 and adjusted.json()["on_hand"] == 8
    assert (await history_rows(services, own["id"]))[-1].actor_id == uuid.UUID(vendor_tokens["user"]["id"])
    for product in (theirs, house):
        put = await client.put(f"{INV}/{product['id']}", headers=vendor, json={"on_hand": 0, "reason": "x"})
        assert put.status_code == 404
        adjust = await client.post(
            f"{INV}/adjust", headers=vendor, json={"product_id": product["id"], "delta": -1, "reason": "x"}
        )
        assert adjust.status_code == 404
        assert await stock(services, product["id"]) == (4, 0)
    batch = {"adjustments": [{"product_id": own["id"], "delta": 1, "reason": "x"}]}
    assert (await client.post(f"{INV}/batch", headers=vendor, json=batch)).status_code == 403
    assert (await client.get(f"{INV}/low-stock", headers=vendor)).status_code == 403
    assert (await client.get(f"{INV}/history", headers=vendor)).status_code == 403
    assert await stock(services, own["id"]) == (8, 0)


async def test_customers_get_403_procurement_may_do_everything(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    mug = await create(client, admin, name="Mug", stock=4)
    customer = bearer(await register(client))
    sales = bearer(await user_with_role(services, client, "sales"))
    procurement = bearer(await user_with_role(services, client, "procurement"))
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", INV, None),
        ("GET", f"{INV}/low-stock", None),
        ("GET", f"{INV}/history", None),
        ("PUT", f"{INV}/{mug['id']}", {"on_hand": 1, "reason": "x"}),
        ("POST", f"{INV}/adjust", {"product_id": mug["id"], "delta": 1, "reason": "x"}),
        ("POST", f"{INV}/batch", {"adjustments": [{"product_id": mug["id"], "delta": 1, "reason": "x"}]}),
    ]
    client.cookies.clear()  # signing in set cookies; these calls authenticate by bearer token only
    for method, url, body in calls:
        assert (await client.request(method, url, json=body)).status_code == 401, url
        for who in (customer, sales):
            response = await client.request(method, url, json=body, headers=who)
            assert response.status_code == 403, (url, response.text)
            assert response.json()["type"] == "https://mercato.dev/problems/forbidden"
    assert await stock(services, mug["id"]) == (4, 0)
    for method, url, body in calls:
        response = await client.request(method, url, json=body, headers=procurement)
        assert response.status_code == 200, (url, response.text)
    assert await stock(services, mug["id"]) == (3, 0)  # set to 1, then +1, then +1


# --- the order flow (service functions) -----------------------------------------------------------------------


async def test_reserve_commit_release_restock(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    mug = await create(client, admin, name="Mug", stock=10)
    tee = await create(client, admin, name="Tee", variants=[{"sku": "T-S", "name": "S", "stock": 4}])
    variant = tee["variants"][0]
    actor = uuid.uuid4()
    async with services.db.session(write=True) as session:
        await inventory.reserve(
            session, [unit(tee, 1, variant), unit(mug, 3), unit(tee, 1, variant)], reference="ORD-1", actor_id=actor
        )
    assert await stock(services, mug["id"]) == (10, 3)
    assert await stock(services, tee["id"], variant["id"]) == (4, 2)  # repeated units are summed
    assert (await client.get(f"{P}/{mug['id']}")).json()["stock"] == 7
    async with services.db.session(write=True) as session:
        await inventory.commit(session, [unit(mug, 2)], reference="ORD-1", reason="order.paid")
        await inventory.release(
            session, [unit(mug, 1), unit(tee, 2, variant)], reference="ORD-1", reason="order.cancelled"
        )
    assert await stock(services, mug["id"]) == (8, 0)
    assert await stock(services, tee["id"], variant["id"]) == (4, 0)
    assert (await client.get(f"{P}/{mug['id']}")).json()["stock"] == 8
    async with services.db.session(write=True) as session:
        await inventory.restock(session, [unit(mug, 2)], reference="RET-1", reason="returned")
    assert await stock(services, mug["id"]) == (10, 0)
    rows = [h for h in await history_rows(services, mug["id"]) if h.reason != "initial stock"]
    assert [(h.reason, h.delta, h.reserved_delta, h.on_hand_after, h.reserved_after, h.reference) for h in rows] == [
        ("order.placed", 0, 3, 10, 3, "ORD-1"),
        ("order.paid", -2, -2, 8, 1, "ORD-1"),
        ("order.cancelled", 0, -1, 8, 0, "ORD-1"),
        ("returned", 2, 0, 10, 0, "RET-1"),
    ]
    assert rows[0].actor_id == actor and rows[1].actor_id is None
    # releasing or selling more than is reserved is refused
    for move in (inventory.release, inventory.commit):
        with pytest.raises(Conflict) as refused:
            async with services.db.session(write=True) as session:
                await move(session, [unit(mug, 1)], reference="ORD-1", reason="x")
        assert refused.type is Conflict
    with pytest.raises(ValidationFailed, match="positive"):
        async with services.db.session(write=True) as session:
            await inventory.reserve(session, [unit(mug, 0)], reference="ORD-2")
    assert await stock(services, mug["id"]) == (10, 0)


async def test_failed_reservation_leaves_nothing_reserved(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    first = await create(client, admin, name="First", stock=5)
    second = await create(client, admin, name="Second", stock=1)
    # the units are reserved in (product_id, variant_id) order: make sure the plentiful one goes first
    plenty, scarce = sorted([first, second], key=lambda p: uuid.UUID(p["id"]))
    await client.put(f"{INV}/{plenty['id']}", headers=admin, json={"on_hand": 5, "reason": "count"})
    await client.put(f"{INV}/{scarce['id']}", headers=admin, json={"on_hand": 1, "reason": "count"})
    before = len(await history_rows(services))
    with pytest.raises(InsufficientStock) as raised:
        async with services.db.session(write=True) as session:
            await inventory.reserve(session, [unit(scarce, 2), unit(plenty, 2)], reference="ORD-1")
    assert raised.value.extra == {"product_id": scarce["id"], "variant_id": None, "available": 1}
    assert await stock(services, plenty["id"]) == (5, 0)
    assert await stock(services, scarce["id"]) == (1, 0)
    assert len(await history_rows(services)) == before
    # a unit without a stock row has nothing available
    with pytest.raises(InsufficientStock) as missing:
        async with services.db.session(write=True) as session:
            await inventory.reserve(session, [(uuid.UUID(plenty["id"]), uuid.uuid4(), 1)], reference="ORD-2")
    assert missing.value.extra["available"] == 0


async def test_concurrent_reservations_never_oversell(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    mug = await create(client, admin, name="Mug", stock=10)

    async def buy(n: int) -> bool:
        try:
            async with services.db.session(write=True) as session:
                await inventory.reserve(session, [unit(mug, 1)], reference=f"ORD-{n}")
        except InsufficientStock:
            return False
        return True

    outcomes = await asyncio.gather(*(buy(n) for n in range(50)))
    assert outcomes.count(True) == 10
    assert await stock(services, mug["id"]) == (10, 10)
    row = (await client.get(INV, headers=admin, params={"product_id": mug["id"]})).json()["data"][0]
    assert (row["available"], row["reserved"]) == (0, 10)
    placed = [h for h in await history_rows(services, mug["id"]) if h.reason == "order.placed"]
    assert len(placed) == 10
    assert sorted(h.reserved_after for h in placed) == list(range(1, 11))
    assert all(h.on_hand_after - h.reserved_after >= 0 for h in placed)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, 20), deltas=st.lists(st.integers(-15, 15).filter(bool), min_size=1, max_size=8))
async def test_adjustments_match_a_simple_model(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services, start: int, deltas: list[int]
) -> None:
    product = await create(client, admin, stock=start)
    expected, applied = start, 0
    for delta in deltas:
        response = await client.post(
            f"{INV}/adjust", headers=admin, json={"product_id": product["id"], "delta": delta, "reason": "model"}
        )
        if expected + delta >= 0:
            assert response.status_code == 200, response.text
            expected += delta
            applied += 1
        else:
            assert response.status_code == 409
        assert await stock(services, product["id"]) == (expected, 0)
    rows = [h for h in await history_rows(services, product["id"]) if h.reason == "model"]
    assert len(rows) == applied
    assert sum(h.delta for h in rows) == expected - start
