"""Two-tier cache (cashews): an in-process memory tier in front of a shared Redis tier when configured.

Without Redis the memory tier is the whole cache. Entries read from the shared tier are kept locally for at most
``local_ttl`` seconds, which bounds how long another process may serve a stale entry after an invalidation
(API.md §2: revocation takes effect across processes within 5 s).

An invalidation must also win against a load that read the database just before it: :meth:`Caches.delete`
leaves a short-lived tombstone in the shared tier, which a loaded value may not overwrite (``SET NX``), and a
mark on a key whose load is in flight in this process, which stops that load from storing its result locally.
Otherwise a session revoked while a request was loading it came back to life for the shared TTL (300 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from cashews import Cache

from mercato.platform.metrics import Metrics

#: What :meth:`Caches.delete` leaves in the shared tier, and for how long (seconds): longer than any load takes.
TOMBSTONE = "__mercato_deleted__"
TOMBSTONE_TTL = 60


class Caches:
    """``get``/``set``/``delete`` over the local and (optional) shared tier. TTLs are in seconds.

    Args:
        redis_url: ``redis://...`` or ``None`` for memory only.
        prefix: prepended to every shared key, so several stores (or test runs) can share one Redis.
    """

    def __init__(self, redis_url: str | None, *, metrics: Metrics, prefix: str = "mercato:") -> None:
        self.metrics = metrics
        self.prefix = prefix
        self.local = Cache()
        self.local.setup("mem://?size=200000")
        self.shared: Cache | None = None
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self._stale: set[str] = set()  # keys deleted while their load was in flight: that load stores nothing
        if redis_url:
            self.shared = Cache()
            self.shared.setup(redis_url, suppress=False)

    async def get(self, key: str, *, local_ttl: int, name: str = "default") -> Any:
        """Return the cached value or ``None``; a shared hit is copied into the local tier for ``local_ttl``."""
        value = await self.local.get(key)
        if value is not None:
            self.metrics.cache_hits.labels(name).inc()
            return value
        if self.shared is not None:
            value = await self.shared.get(self.prefix + key)
            if value is not None and value != TOMBSTONE:
                if local_ttl > 0:
                    await self.local.set(key, value, expire=local_ttl)
                self.metrics.cache_hits.labels(name).inc()
                return value
        self.metrics.cache_misses.labels(name).inc()
        return None

    async def get_or_load(
        self, key: str, load: Callable[[], Awaitable[Any]], *, ttl: int, local_ttl: int, name: str = "default"
    ) -> Any:
        """Return the cached value, or load and store it. Concurrent misses of one key in this process share a
        single ``load()`` call, so an expiring entry never sends a burst of identical queries to the database.
        A value loaded while the key was deleted (here or, through the tombstone, in another process) is returned
        but not stored."""
        value = await self.get(key, local_ttl=local_ttl, name=name)
        if value is not None:
            return value
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
            stored = True
            if self.shared is not None:  # only where nothing is: a tombstone means it was deleted meanwhile
                stored = bool(await self.shared.set(self.prefix + key, value, expire=ttl, exist=False))
            if stored and key not in self._stale:
                local = local_ttl if self.shared is not None else (min(ttl, local_ttl) if local_ttl > 0 else ttl)
                if local > 0:
                    await self.local.set(key, value, expire=local)
            future.set_result(value)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._loading[key]
            self._stale.discard(key)
        return value

    async def set(self, key: str, value: Any, *, ttl: int, local_ttl: int) -> None:
        """Store ``value`` for ``ttl`` seconds in the shared tier and ``local_ttl`` seconds locally."""
        if self.shared is not None:
            await self.shared.set(self.prefix + key, value, expire=ttl)
            if local_ttl > 0:
                await self.local.set(key, value, expire=local_ttl)
        else:
            # other processes cannot delete this entry: keep it no longer than local_ttl when one is given
            await self.local.set(key, value, expire=min(ttl, local_ttl) if local_ttl > 0 else ttl)

    async def delete(self, *keys: str) -> None:
        """Remove ``keys`` from both tiers; the shared tier keeps a tombstone for ``TOMBSTONE_TTL`` seconds so
        that a value loaded before the delete cannot be stored after it (see the module docstring)."""
        for key in keys:
            if key in self._loading:
                self._stale.add(key)
            await self.local.delete(key)
            if self.shared is not None:
                await self.shared.set(self.prefix + key, TOMBSTONE, expire=TOMBSTONE_TTL)

    async def ping(self) -> None:
        """Check the shared tier answers; raises when Redis is configured but unreachable."""
        if self.shared is not None:
            await self.shared.ping()

    async def clear_local(self) -> None:
        """Empty the in-process tier (tests)."""
        await self.local.clear()

    async def close(self) -> None:
        """Close connections."""
        await self.local.close()
        if self.shared is not None:
            await self.shared.close()

    async def counter(self, key: str) -> int:
        """Read a shared counter (0 when never incremented); read from Redis on every call when configured,
        so every process sees an increment at once."""
        store = self.shared or self.local
        name = self.prefix + key if self.shared is not None else key
        value = await store.get(name)
        return int(value or 0)

    async def increment(self, key: str) -> int:
        """Atomically add one to a shared counter and return the new value."""
        store = self.shared or self.local
        name = self.prefix + key if self.shared is not None else key
        return int(await store.incr(name))
