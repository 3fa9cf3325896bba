"""Where does a request's time go inside the app? Calls the ASGI app in-process (no server, no sockets), so
the figures are the application's own cost per request, without uvicorn's HTTP parsing or the network.

For ``/health`` and ``GET /api/v1/auth/me`` it prints wall and CPU microseconds per request (best of
``--rounds``, ``--concurrency`` requests in flight), how many dependency nodes FastAPI solves per request and
which functions it hands to its thread pool; with ``--profile``, the top functions of a cProfile run over
``GET /api/v1/auth/me``::

    .venv/bin/python bench/profile_app.py [--requests 3000] [--profile] [--sort tottime]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))

PASSWORD = "bench-password-7731"  # noqa: S105 - the throwaway benchmark user's


async def call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> int:
    """Send one request straight to the ASGI ``app``; returns the response status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def timed(
    app: Any,
    path: str,
    headers: list[tuple[bytes, bytes]],
    requests: int,
    concurrency: int,
) -> tuple[float, float]:
    """Send ``requests`` requests, ``concurrency`` at a time; returns (wall, CPU) seconds per request. CPU
    time is the whole process's (every thread), so it is robust to other load on the machine."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await call(app, "GET", path, headers)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(requests)))
    return (time.perf_counter() - wall) / requests, (time.process_time() - cpu) / requests


def count_thread_hops() -> list[str]:
    """Record the name of every function FastAPI hands to the thread pool (sync dependencies and endpoints);
    returns the list the names are appended to."""
    import fastapi.dependencies.utils
    import fastapi.routing

    names: list[str] = []
    for module in (fastapi.dependencies.utils, fastapi.routing):
        original = module.run_in_threadpool

        async def counted(func: Any, *a: Any, _original: Any = original, **kw: Any) -> Any:
            names.append(getattr(kw.get("function", func), "__name__", repr(func)))
            return await _original(func, *a, **kw)

        module.run_in_threadpool = counted  # type: ignore[assignment]
    return names


def count_dependency_nodes() -> list[int]:
    """Count the dependency nodes FastAPI solves (``solve_dependencies`` calls, the route itself included);
    returns a one-element list holding the running count."""
    import fastapi.dependencies.utils
    import fastapi.routing

    count = [0]
    original = fastapi.dependencies.utils.solve_dependencies

    async def counted(*a: Any, **kw: Any) -> Any:
        count[0] += 1
        return await original(*a, **kw)

    fastapi.dependencies.utils.solve_dependencies = counted  # recursive calls go through the module global
    fastapi.routing.solve_dependencies = counted  # type: ignore[attr-defined]
    return count


async def main(args: argparse.Namespace) -> None:
    """Build the app on a fresh SQLite database, register a user, then time (and maybe profile) requests."""
    data_dir = Path(tempfile.mkdtemp(prefix="mercato-profile-"))
    os.environ.update(
        {
            "MERCATO_ENV": "production",
            "MERCATO_ALLOW_TEST_GATEWAY": "true",  # the built-in gateway: benchmarks take no real money
            "MERCATO_SECRET_KEY": secrets.token_urlsafe(48),
            "MERCATO_DATA_DIR": str(data_dir),
            "MERCATO_RATE_LIMITS": "false",
            "MERCATO_RUN_JOBS": "false",  # no job poller competing with the timed requests
            "MERCATO_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'mercato.db'}",
        }
    )
    from mercato.app import create_app
    from mercato.config import Settings
    from mercato.db import migrate

    try:
        settings = Settings.load()
        await migrate.upgrade(settings.database_url)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            import httpx

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                response = await client.post(
                    "/api/v1/auth/register", json={"email": "profile@example.com", "password": PASSWORD}
                )
                token = response.json()["access_token"]
            bearer = [(b"authorization", f"Bearer {token}".encode())]
            hops = count_thread_hops()
            nodes = count_dependency_nodes()
            cases = {"/health": [], "/api/v1/auth/me": bearer}
            for path, headers in cases.items():
                assert await call(app, "GET", path, headers) == 200, path
                hops.clear()
                nodes[0] = 0
                await call(app, "GET", path, headers)
                thread_hops, dependency_nodes = list(hops), nodes[0]
                best_wall = best_cpu = float("inf")
                for _ in range(args.rounds):
                    wall, cpu = await timed(app, path, headers, args.requests, args.concurrency)
                    best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
                print(
                    f"{path:<17} wall {best_wall * 1e6:7.1f} µs/request ({1 / best_wall:6.0f}/s), "
                    f"CPU {best_cpu * 1e6:7.1f} µs/request; dependency nodes solved: {dependency_nodes}; "
                    f"thread-pool hops: {thread_hops or 'none'}"
                )
            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(args.requests):
                    await call(app, "GET", "/api/v1/auth/me", bearer)
                profiler.disable()
                print(f"\ncProfile of {args.requests} × GET /api/v1/auth/me, top {args.top} by {args.sort}:")
                pstats.Stats(profiler).strip_dirs().sort_stats(args.sort).print_stats(args.top)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per timing round (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds per path; the best is kept")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight at once (default 64)")
    parser.add_argument("--profile", action="store_true", help="also cProfile GET /api/v1/auth/me")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative, ...)")
    parser.add_argument("--top", type=int, default=35, help="functions to list (default 35)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
