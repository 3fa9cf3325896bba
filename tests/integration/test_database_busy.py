"""Overload on SQLite: a write that cannot get the database's write lock within the busy timeout is answered 503
``service-unavailable`` with ``Retry-After`` (never a 500), and changes nothing. SQLite only (PostgreSQL has no
database-wide write lock), so it runs on its own SQLite database rather than per backend."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mercato.app import create_app
from mercato.config import Settings
from mercato.db import migrate
from mercato.db.engine import Database
from mercato.platform.context import Services
from mercato.web.problems import PROBLEM_JSON


@pytest.fixture
async def busy_client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """A client for an app on a fresh SQLite database whose writers give up after 50 ms (instead of 10 s)."""
    path = tmp_path / "mercato.db"
    url = f"sqlite+aiosqlite:///{path}"
    await migrate.upgrade(url)
    settings = Settings.load(
        env="test", database_url=url, data_dir=tmp_path, run_jobs=False, secret_key="busy-test-secret-" + "x" * 32
    )
    services = Services.build(settings)
    await services.db.dispose()
    services.db = Database(url, busy_timeout_ms=50)
    for factory in (services.db.sessionmaker, services.db.write_sessionmaker):
        factory.configure(info={"services": services})
    transport = httpx.ASGITransport(app=create_app(settings, services=services), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, path
    finally:
        await services.close()


async def test_write_lock_timeout_is_503_with_retry_after(busy_client: tuple[httpx.AsyncClient, Path]) -> None:
    client, path = busy_client
    product = {"product_id": "0190a9b1-0000-7000-8000-000000000001", "quantity": 1}
    other = sqlite3.connect(path, isolation_level=None)  # another process's writer, holding the lock
    try:
        other.execute("BEGIN IMMEDIATE")
        response = await client.post("/api/v1/cart/items", json=product)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["type"].endswith("/service-unavailable")
    assert body["status"] == 503
    # once the lock is free the same request is answered normally (here: no such product)
    assert (await client.post("/api/v1/cart/items", json=product)).status_code == 404
    assert (await client.get("/api/v1/cart")).json()["id"] is None  # the refused write created no cart
