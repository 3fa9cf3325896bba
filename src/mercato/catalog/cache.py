"""Caching of public catalog reads (cashews through :class:`~mercato.platform.cache.Caches`).

Cached entries are keyed by a catalog *generation*: a counter in the shared cache (Redis when configured) that
every catalog or stock write increments right after its transaction commits. A read after a write therefore never
sees the old entry, in any process (API.md §1 "Reads see writes"); superseded entries simply expire.
``MERCATO_CATALOG_CACHE_TTL=0`` turns the cache off.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.db.engine import after_commit
from mercato.platform.context import Services, services_of

GENERATION_KEY = "catalog:generation"
T = TypeVar("T")


async def cached(services: Services, key: str, build: Callable[[], Awaitable[T]]) -> T:
    """Return the value cached under ``key`` for the current generation, building and storing it on a miss."""
    ttl = services.settings.catalog_cache_ttl
    if ttl <= 0:
        return await build()
    generation = await services.cache.counter(GENERATION_KEY)
    body = await services.cache.get_or_load(
        f"catalog:{generation}:{key}", build, ttl=ttl, local_ttl=ttl, name="catalog"
    )
    return cast(T, body)


def invalidate_after_commit(session: AsyncSession) -> None:
    """Make every cached catalog read stale once the caller's transaction commits (idempotent per session)."""
    if session.info.get("catalog_invalidated"):
        return
    session.info["catalog_invalidated"] = True
    services = services_of(session)

    async def bump() -> None:
        await services.cache.increment(GENERATION_KEY)

    after_commit(session, bump)
