"""Caching of public catalog reads (cashews through :class:`~mercato.platform.cache.Caches`).

Cached entries are keyed by a catalog *generation*: a counter in the shared cache (Redis when configured) that
every catalog or stock write increments right after its transaction commits. A read after a write therefore never
sees the old entry, in any process (API.md §1 "Reads see writes"); superseded entries simply expire.
``MERCATO_CATALOG_CACHE_TTL=0`` turns the cache off.

Public read routes use :class:`CachedReadRoute`: an anonymous GET that was answered before (same URL, same
generation) is answered from the cached bytes before FastAPI parses a parameter or solves a dependency, which is
most of the cost of a cached read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

from fastapi import Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.db.engine import after_commit
from mercato.platform.context import Services, services_of
from mercato.web.conditional import json_response
from mercato.web.deps import ACCESS_COOKIE, general_rate_limit

GENERATION_KEY = "catalog:generation"
T = TypeVar("T")
#: Endpoints (functions) whose anonymous answers :class:`CachedReadRoute` may replay; see :func:`public_read`.
_PUBLIC_READS: set[Callable[..., Any]] = set()


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


def public_read(endpoint: Callable[..., Coroutine[Any, Any, Response]]) -> Callable[..., Coroutine[Any, Any, Response]]:
    """Mark a GET endpoint whose answer to an anonymous caller depends on nothing but its URL and the catalog, so
    that :class:`CachedReadRoute` may replay it. Put it below the ``@router.get`` decorator.

    Args:
        endpoint: the route function (it returns a ``Response`` with an ``ETag``).

    Returns:
        ``endpoint`` itself.
    """
    _PUBLIC_READS.add(endpoint)
    return endpoint


def _anonymous(request: Request) -> bool:
    headers = request.headers
    return "authorization" not in headers and "x-api-key" not in headers and ACCESS_COOKIE not in request.cookies


class CachedReadRoute(APIRoute):
    """A route that replays the cached answer of a :func:`public_read` endpoint to anonymous GETs.

    The first anonymous request for a URL runs the route as usual (validation, dependencies, the endpoint's own
    cache); a 200 is then stored under the URL and the catalog generation read *before* the route ran, so a write
    committed meanwhile is never hidden. Later anonymous requests for the same URL get the stored body, ``ETag``
    and ``Link`` (``If-None-Match`` still gives 304) after the general rate limit, without FastAPI's parameter
    parsing and dependency solving. Callers with credentials, and every request while the cache is off
    (``MERCATO_CATALOG_CACHE_TTL=0``), take the usual way.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The usual handler, wrapped with the replay for :func:`public_read` endpoints."""
        handler = super().get_route_handler()
        if self.endpoint not in _PUBLIC_READS:
            return handler

        async def replay_or_handle(request: Request) -> Response:
            services: Services = request.app.state.services
            ttl = services.settings.catalog_cache_ttl
            if ttl <= 0 or request.method != "GET" or not _anonymous(request):
                return await handler(request)
            generation = await services.cache.counter(GENERATION_KEY)
            key = f"catalog:{generation}:url:{request.url}"
            stored = await services.cache.get(key, local_ttl=ttl, name="catalog_url")
            if stored is None:
                response = await handler(request)
                if response.status_code == 200 and "etag" in response.headers:
                    entry = (bytes(response.body), response.headers["etag"], response.headers.get("link"))
                    await services.cache.set(key, entry, ttl=ttl, local_ttl=ttl)
                return response
            body, etag, link = stored
            headers = {"Link": link} if link else {}
            # what the /api/v1 router's dependency does; the request middleware adds the rate-limit headers
            await general_rate_limit(request, None)
            if "if-none-match" in request.headers:
                return json_response(request, body, headers=headers)
            return Response(body, media_type="application/json", headers={"ETag": etag, **headers})

        return replay_or_handle
