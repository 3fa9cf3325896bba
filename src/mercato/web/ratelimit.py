"""Rate limits (``limits`` library, moving window; memory storage, or Redis when ``MERCATO_REDIS_URL`` is set).

Defaults and headers follow API.md §1: every response under ``/api/v1`` carries ``RateLimit-Policy`` and
``RateLimit`` (draft-ietf-httpapi-ratelimit-headers, structured fields) and ``X-RateLimit-Limit``,
``X-RateLimit-Remaining``, ``X-RateLimit-Reset`` (seconds until the window frees a request); a refused request is a
429 problem with ``Retry-After``. ``MERCATO_RATE_LIMITS=false`` turns every limit off.

One mechanism puts the headers on responses: the general limit (``mercato.web.deps.general_rate_limit``) leaves
the request's :class:`Quota` in the ASGI scope's state under :data:`QUOTA_STATE`, and the request middleware
(``mercato.web.middleware.RequestContextMiddleware``) adds its headers when the response starts — whatever the
route returned (a model, its own ``Response`` such as the catalog's ETag/304 answers, a problem).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, cast

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from mercato.config import Settings
from mercato.errors import RateLimited

#: Key of the request's :class:`Quota` in the ASGI scope's ``state`` (``request.state``).
QUOTA_STATE = "rate_limit_quota"


@dataclass(frozen=True)
class Quota:
    """What is left of one limit for one client: ``limit`` requests per ``window`` seconds, ``remaining``
    now, ``reset`` seconds until one more is allowed."""

    name: str
    limit: int
    window: int
    remaining: int
    reset: int

    def headers(self) -> dict[str, str]:
        """The response headers describing this quota."""
        return {
            "RateLimit-Policy": f'"{self.name}";q={self.limit};w={self.window}',
            "RateLimit": f'"{self.name}";r={self.remaining};t={self.reset}',
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """:meth:`headers` as ASGI header pairs (lower-case names, latin-1 bytes)."""
        return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers().items()]


class RateLimiter:
    """Named limits from settings, checked per client key (an account email, an IP, a user id)."""

    def __init__(self, settings: Settings, *, prefix: str = "mercato:") -> None:
        self.enabled = settings.rate_limits
        self.storage: Storage = (
            RedisStorage(_async_redis_uri(settings.redis_url), implementation="redispy", key_prefix=prefix + "rl")
            if settings.redis_url
            else MemoryStorage()
        )
        self.strategy = MovingWindowRateLimiter(self.storage)
        self.items: dict[str, RateLimitItem] = {
            "login-account": parse(settings.rate_limit_login_account),
            "login-ip": parse(settings.rate_limit_login_ip),
            "register": parse(settings.rate_limit_register),
            "password-reset": parse(settings.rate_limit_password_reset),
            "default": parse(settings.rate_limit_default),
        }

    async def hit(self, name: str, key: str) -> Quota | None:
        """Count one request of ``key`` against limit ``name``.

        Returns the quota left (``None`` when limits are off). Raises:
            RateLimited: the limit was already exhausted; nothing is counted.
        """
        if not self.enabled:
            return None
        item = self.items[name]
        if not await self.strategy.hit(item, name, key):
            raise await self._refusal(name, key)
        return await self._quota(name, key)

    async def attempt(self, name: str, key: str) -> None:
        """Count one attempt of ``key`` against ``name`` *before* making it, in the same atomic step as the check
        (the storage's moving-window acquire: one Lua script on Redis, one lock-held step in memory). Concurrent
        attempts therefore cannot all pass a check made before any of them was counted. Give the count back with
        :meth:`forgive` when the attempt turns out not to count (a successful login).

        Raises:
            RateLimited: no attempt left in the window (429); nothing is counted.
        """
        if self.enabled and not await self.strategy.hit(self.items[name], name, key):
            raise await self._refusal(name, key)

    async def forgive(self, name: str, key: str) -> None:
        """Take back one attempt counted by :meth:`attempt`: the newest entry of ``key``'s window. Entries are
        bare timestamps, so the count is exact; an attempt counted while ours ran keeps ours' (slightly earlier)
        expiry. ``limits`` has no public call for this: it edits the window where the library's own moving-window
        code keeps it (a list in memory, a Redis list filled by ``LPUSH``)."""
        if not self.enabled:
            return
        window = self.items[name].key_for(name, key)
        if isinstance(self.storage, MemoryStorage):
            entries = self.storage.events.get(window)
            if entries:  # no await between reading and popping: atomic for this event loop
                entries.pop(0)
        else:
            bridge = cast(Any, self.storage).bridge
            await bridge.get_connection().lpop(bridge.prefixed_key(window))

    async def _quota(self, name: str, key: str) -> Quota:
        item = self.items[name]
        stats = await self.strategy.get_window_stats(item, name, key)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return Quota(name, item.amount, item.get_expiry(), stats.remaining, reset)

    async def _refusal(self, name: str, key: str) -> RateLimited:
        quota = await self._quota(name, key)
        retry = max(1, quota.reset)
        return RateLimited(f"Too many requests; retry in {retry} s.", retry_after=retry)

    async def reset(self) -> None:
        """Forget every counter (tests). Memory storage is replaced rather than cleared: clearing it races the
        storage's own expiry task."""
        if isinstance(self.storage, MemoryStorage):
            self.storage = MemoryStorage()
            self.strategy = MovingWindowRateLimiter(self.storage)
        else:
            await self.storage.reset()

    async def close(self) -> None:
        """Close the Redis connection pool (``limits`` offers no public close; its redis-py client is reached
        through the storage's bridge). Memory storage holds nothing to release."""
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        if client is not None:
            await client.aclose()


def _async_redis_uri(url: str | None) -> str:
    assert url is not None
    return url if url.startswith("async+") else "async+" + url
