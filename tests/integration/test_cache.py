"""The two-tier cache: an invalidation wins against a load that read the database just before it."""

from __future__ import annotations

import asyncio

from mercato.platform.cache import Caches
from mercato.platform.context import Services
from mercato.platform.metrics import Metrics


async def test_a_delete_during_a_load_keeps_the_loaded_value_out_of_the_cache(services: Services) -> None:
    """A session revoked while a request was loading its state must not come back from the cache: the load's
    answer is returned to its caller but stored in neither tier (on PostgreSQL runs the shared tier is Redis)."""
    cache = services.cache
    read, go_on = asyncio.Event(), asyncio.Event()

    async def load() -> dict[str, bool]:
        read.set()  # the database said "live"...
        await go_on.wait()  # ...and the revocation commits and invalidates before we store it
        return {"live": True}

    loading = asyncio.create_task(cache.get_or_load("sess:race", load, ttl=300, local_ttl=5))
    await read.wait()
    await cache.delete("sess:race")
    go_on.set()
    assert await loading == {"live": True}
    assert await cache.get("sess:race", local_ttl=5) is None

    async def fresh() -> dict[str, bool]:
        return {"live": False}

    assert await cache.get_or_load("sess:race", fresh, ttl=300, local_ttl=5) == {"live": False}


async def test_another_process_deleting_during_a_load_wins_too(services: Services) -> None:
    """The same race across processes: the delete comes from another process sharing the Redis tier (without
    Redis each process has its own cache and nothing is shared to go stale)."""
    if services.cache.shared is None:
        other = services.cache  # one process: the in-process mark does the work
    else:
        other = Caches(services.settings.redis_url, metrics=Metrics(), prefix=services.cache.prefix)
    read, go_on = asyncio.Event(), asyncio.Event()

    async def load() -> dict[str, bool]:
        read.set()
        await go_on.wait()
        return {"live": True}

    try:
        loading = asyncio.create_task(services.cache.get_or_load("user:race", load, ttl=300, local_ttl=5))
        await read.wait()
        await other.delete("user:race")
        go_on.set()
        await loading
        assert await services.cache.get("user:race", local_ttl=5) is None
        assert await other.get("user:race", local_ttl=5) is None
    finally:
        if other is not services.cache:
            await other.close()
