"""Shared fixtures: one migrated database per backend (SQLite always; PostgreSQL + Redis when
``MERCATO_TEST_POSTGRES_URL`` / ``MERCATO_TEST_REDIS_URL`` are set, as CI does), emptied between tests.

Every test that takes ``client`` runs once per configured backend. Databases and Redis keys are created with a
unique name per run and removed at the end; nothing else is touched.
"""

from __future__ import annotations

import email
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mercato.app import create_app
from mercato.config import Settings
from mercato.db import migrate
from mercato.db.models import metadata
from mercato.identity.models import User
from mercato.platform import clock
from mercato.platform.context import Services

POSTGRES_URL = os.environ.get("MERCATO_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("MERCATO_TEST_REDIS_URL")
BACKENDS = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])
STRONG_PASSWORD = "correct-horse-battery-42"


def pytest_report_header() -> str:
    return f"mercato backends: {', '.join(BACKENDS)}; redis: {'yes' if REDIS_URL else 'no (memory)'}"


def _runs_here(item: pytest.Item) -> bool:
    only = item.get_closest_marker("backends")
    return only is None or any(backend in only.args for backend in BACKENDS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        # @pytest.mark.backends("postgres"): a test of one database's own behaviour runs on that one only
        only = metafunc.definition.get_closest_marker("backends")
        metafunc.parametrize("backend", [b for b in BACKENDS if only is None or b in only.args], scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test of a database this run does not have (``@pytest.mark.backends("postgres")`` without
    ``MERCATO_TEST_POSTGRES_URL``) is deselected, not reported as skipped: CI always has both, and there a missing
    service fails the session (``.ci/run``)."""
    absent = [item for item in items if not _runs_here(item)]
    if absent:
        config.hook.pytest_deselected(items=absent)
        items[:] = [item for item in items if _runs_here(item)]


@dataclass
class Backend:
    """A migrated database (and, for PostgreSQL, Redis when configured) for one test session."""

    name: str
    url: str
    redis_url: str | None
    prefix: str
    data_dir: Path

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "env": "test",
            "database_url": self.url,
            "redis_url": self.redis_url,
            "data_dir": self.data_dir,
            "run_jobs": False,
            # cheap argon2 for speed; test_passwords checks the production defaults (OWASP)
            "password_hash_memory_kib": 1024,
            "password_hash_time_cost": 1,
            "secret_key": "test-secret-key-for-mercato-" + self.prefix,
        }
        values.update(overrides)
        return Settings.load(**values)


async def _create_postgres(base_url: str, name: str) -> str:
    admin = create_async_engine(base_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return base_url.rsplit("/", 1)[0] + "/" + name


async def _drop_postgres(base_url: str, name: str) -> None:
    admin = create_async_engine(base_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


@pytest.fixture(scope="session")
async def database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Backend]:
    """Create and migrate the backend's database once per session; drop it afterwards."""
    run = uuid.uuid4().hex[:10]
    data_dir = tmp_path_factory.mktemp(f"data-{backend}")
    if backend == "sqlite":
        yield Backend("sqlite", f"sqlite+aiosqlite:///{data_dir}/mercato.db", None, f"t{run}:", data_dir)
        return
    assert POSTGRES_URL is not None
    name = f"mercato_test_{run}"
    url = await _create_postgres(POSTGRES_URL, name)
    try:
        yield Backend("postgres", url, REDIS_URL, f"mercato-test-{run}:", data_dir)
    finally:
        await _drop_postgres(POSTGRES_URL, name)


@pytest.fixture(scope="session")
async def migrated(database: Backend) -> Backend:
    await migrate.upgrade(database.url)
    return database


@pytest.fixture(scope="session")
async def services(migrated: Backend) -> AsyncIterator[Services]:
    services = Services.build(migrated.settings(), cache_prefix=migrated.prefix)
    try:
        yield services
    finally:
        if services.cache.shared is not None:
            await services.cache.shared.delete_match(migrated.prefix + "*")
        await services.limiter.reset()
        await services.close()


async def _empty(services: Services) -> None:
    async with services.db.session(write=True) as session:
        for table in reversed(metadata.sorted_tables):
            await session.execute(table.delete())
    await services.cache.clear_local()
    if services.cache.shared is not None:
        await services.cache.shared.delete_match(services.cache.prefix + "*")
    await services.limiter.reset()
    shutil.rmtree(services.settings.data_dir / "outbox", ignore_errors=True)


@pytest.fixture(scope="session")
def shared_app(services: Services) -> Any:
    """One app per backend for the session: building it (every route, dependency and model) took 0.2-0.4 s, a
    few minutes over the suite. A test that adds routes or overrides builds its own with ``create_app``."""
    return create_app(services.settings, services=services)


@pytest.fixture
async def app(services: Services, shared_app: Any) -> Any:
    await _empty(services)
    return shared_app


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def run_jobs_after_reservation_ttl(services: Services) -> None:
    """Run the jobs due once ``MERCATO_RESERVATION_TTL`` (plus 5 s) has passed, as the clock then reads."""
    later = datetime.now(UTC) + timedelta(seconds=services.settings.reservation_ttl + 5)
    clock.set_clock(lambda: later)
    try:
        await services.jobs.run_due()
    finally:
        clock.set_clock(None)


async def sent_mail(services: Services, to: str | None = None) -> list[EmailMessage]:
    """Run due jobs, then return the messages in the file outbox (optionally only those to ``to``)."""
    await services.jobs.run_due()
    outbox = services.settings.data_dir / "outbox"
    messages = []
    for path in sorted(outbox.glob("*.eml")) if outbox.exists() else []:
        message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        assert isinstance(message, EmailMessage)
        if to is None or message["To"] == to:
            messages.append(message)
    return messages


def token_from(message: EmailMessage) -> str:
    """The token printed on its own line after 'Token for ...' / 'Or send this token ...'."""
    body = message.get_content()
    lines = [line.strip() for line in body.splitlines()]
    for index, line in enumerate(lines):
        if line.lower().startswith(("token for", "or send this token")):
            return lines[index + 1]
    raise AssertionError(f"no token in {body!r}")


async def register(client: httpx.AsyncClient, email_address: str | None = None, **extra: Any) -> dict[str, Any]:
    """Register a customer and return the token response body."""
    body = {"email": email_address or f"user-{uuid.uuid4().hex[:8]}@example.com", "password": STRONG_PASSWORD}
    body.update(extra)
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    """Authorization header for a token response."""
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def make_admin(services: Services, client: httpx.AsyncClient) -> dict[str, Any]:
    """Register a user, promote it to admin directly in the database, and sign in again."""
    from mercato.identity.models import User

    tokens = await register(client)
    async with services.db.session(write=True) as session:
        user = await session.get(User, uuid.UUID(tokens["user"]["id"]))
        assert user is not None
        user.role = "admin"
    await services.cache.delete(f"user:{tokens['user']['id']}")
    return await login(client, tokens["user"]["email"])


async def user_with_role(services: Services, client: httpx.AsyncClient, role: str) -> dict[str, Any]:
    """A new user given ``role`` directly in the database, signed in again (its login tokens)."""
    tokens = await register(client)
    async with services.db.session(write=True) as session:
        user = await session.get(User, uuid.UUID(tokens["user"]["id"]))
        assert user is not None
        user.role = role
    await services.cache.delete(f"user:{tokens['user']['id']}")
    return await login(client, tokens["user"]["email"])


async def login(client: httpx.AsyncClient, email_address: str, password: str = STRONG_PASSWORD) -> dict[str, Any]:
    response = await client.post("/api/v1/auth/login", json={"email": email_address, "password": password})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data
