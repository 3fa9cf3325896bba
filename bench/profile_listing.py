"""Where an uncached product listing's CPU goes: the whole request through the ASGI app, ``/health`` the same way,
and each part of ``catalog.service.listing`` (the page's one statement, which serialises the products, with
and without its count, and the count alone), one call after another in one process on a fresh database seeded
with the demo store plus ``--scale`` products.

Usage::

    .venv/bin/python bench/profile_listing.py [--scale 10000] [--requests 300]

Prints CPU (all threads of the process) and wall milliseconds per call. The catalog cache is off
(``MERCATO_CATALOG_CACHE_TTL=0``). Figures and their reading: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from catalog import seed  # bench/ is not a package: run as a script, its directory is on sys.path
from run import migrate, server_env


async def measure(label: str, call: Callable[[], Awaitable[Any]], n: int) -> None:
    """Run ``call`` 20 times unmeasured, then ``n`` times; print CPU and wall ms per call."""
    for _ in range(20):
        await call()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await call()
    print(
        f"{label:34s} CPU {(time.process_time() - cpu) / n * 1000:6.2f} ms   "
        f"wall {(time.perf_counter() - wall) / n * 1000:6.2f} ms"
    )


async def profile(n: int) -> None:
    """Measure the listing and its parts in this process (the environment names the seeded database)."""
    import httpx

    from mercato.app import create_app
    from mercato.catalog import repository, service
    from mercato.config import Settings

    app = create_app(Settings.load())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    filters = repository.ProductFilter()  # active products, no filter: what GET /products shows the public
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            await measure("GET /api/v1/products?limit=20", lambda: client.get("/api/v1/products?limit=20"), n)
            await measure("GET /health", lambda: client.get("/health"), n)
        currency = app.state.services.settings.currency
        async with app.state.services.db.sessionmaker() as session:
            parts: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                (
                    "service.listing (all parts)",
                    lambda: service.listing(session, filters, sort="-created_at", page=1, limit=20),
                ),
                (
                    "  page statement",
                    lambda: repository.listed_rows(
                        session, filters, sort="-created_at", page=1, limit=20, currency=currency
                    ),
                ),
                (
                    "    without the count",
                    lambda: repository.listed_rows(
                        session, filters, sort="-created_at", page=1, limit=20, currency=currency, counted=False
                    ),
                ),
                ("  count alone", lambda: repository.count_products(session, filters)),
            ]
            for label, call in parts:
                await measure(label, call, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=10000, help="generated products to seed (default 10000)")
    parser.add_argument("--requests", type=int, default=300, help="calls measured per line (default 300)")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="mercato-profile-listing-"))
    try:
        env = server_env(data_dir) | {"MERCATO_CATALOG_CACHE_TTL": "0"}
        migrate(env, data_dir)
        print(f"seeding --demo --scale {args.scale} ...", flush=True)
        seed(env, data_dir, args.scale)
        for key in [k for k in os.environ if k.startswith("MERCATO_")]:
            del os.environ[key]
        os.environ.update({k: v for k, v in env.items() if k.startswith("MERCATO_")})
        asyncio.run(profile(args.requests))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
