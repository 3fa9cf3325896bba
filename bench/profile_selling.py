"""Where do a cart add's and a checkout's time go? Calls the ASGI app in-process (no server, no sockets) on a fresh
SQLite database with the demo store, like ``bench/profile_app.py`` does for ``/auth/me``.

For each scenario (``cart_new``: ``POST /cart/items`` without a cookie, a new guest cart each time;
``cart_existing``: the same into prepared guest carts; ``checkout``: ``POST /orders`` as a guest, one prepared cart
holding one unit per request) it prints the wall and CPU microseconds per request (CPU of every thread of the
process: the event loop, aiosqlite's worker threads, the job runner), and the SQL statements one request runs, with
the database's own share (time between SQLAlchemy's ``before``/``after_cursor_execute``: thread hop to aiosqlite
plus SQLite's work). With ``--hold N`` it keeps sending the chosen scenario for N seconds after printing
``measuring <scenario> pid <pid>`` so that a sampling profiler can attach::

    .venv/bin/python bench/profile_selling.py [--requests 400] [--concurrency 32] [--only cart_new,checkout]
    .venv/bin/python bench/profile_selling.py --only checkout --hold 20 &   # then: py-spy record --pid <pid> ...
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import json
import logging
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))
sys.path.insert(0, str(BENCH_DIR))

from catalog import seed  # noqa: E402 - bench/ is not a package
from profile_app import call  # noqa: E402
from run import migrate, server_env  # noqa: E402

API = "/api/v1"
ADDRESS = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}
JSON_HEADERS = [(b"content-type", b"application/json")]


class Statements:
    """Counts the SQL statements run (and the wall time each one took) through the cursor events of the
    engines (on SQLite, reads and writes have one each)."""

    def __init__(self, *engines: Any) -> None:
        from sqlalchemy import event

        self.log: list[tuple[str, float]] = []
        self.on = False
        started: list[float] = []

        def before(*_: Any) -> None:
            started.append(time.perf_counter())

        def after(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            took = time.perf_counter() - started.pop() if started else 0.0
            if self.on:
                self.log.append((" ".join(statement.split())[:110], took))

        for engine in {id(engine): engine for engine in engines}.values():
            event.listen(engine.sync_engine, "before_cursor_execute", before)
            event.listen(engine.sync_engine, "after_cursor_execute", after)


def unit_body(unit: dict[str, Any]) -> bytes:
    body: dict[str, Any] = {"product_id": unit["product_id"], "quantity": 1}
    if unit["variant_id"]:
        body["variant_id"] = unit["variant_id"]
    return json.dumps(body).encode()


async def send(app: Any, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, Any]:
    """One request through :func:`profile_app.call`, returning the status and the ``set-cookie`` headers."""
    cookies: list[bytes] = []
    scope_headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers]

    async def capture(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            cookies.extend(v for k, v in message["headers"] if k == b"set-cookie")

    status = await _call_capturing(app, method, path, scope_headers, body, capture)
    return status, cookies


async def _call_capturing(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes, capture: Any
) -> int:
    original = app

    async def wrapped(scope: Any, receive: Any, send_: Any) -> None:
        async def tee(message: dict[str, Any]) -> None:
            await capture(message)
            await send_(message)

        await original(scope, receive, tee)

    return await call(wrapped, method, path, headers, body)


def cookie_of(set_cookies: list[bytes]) -> bytes:
    for raw in set_cookies:
        if raw.startswith(b"mercato_cart="):
            return raw.split(b";", 1)[0]
    raise RuntimeError("no mercato_cart cookie")


async def fill_carts(app: Any, units: list[dict[str, Any]], count: int) -> list[bytes]:
    cookies = []
    for index in range(count):
        status, set_cookies = await send(app, "POST", API + "/cart/items", unit_body(units[index % len(units)]), [])
        assert status == 201, status
        cookies.append(cookie_of(set_cookies))
    return cookies


def requests_for(scenario: str, units: list[dict[str, Any]], cookies: list[bytes]) -> list[tuple[str, bytes, Any]]:
    if scenario == "cart_new":
        return [(API + "/cart/items", unit_body(units[1]), []) for _ in cookies]
    if scenario == "cart_existing":
        return [(API + "/cart/items", unit_body(units[1]), [(b"cookie", c)]) for c in cookies]
    body = {"email": "", "shipping_address": ADDRESS}
    out = []
    for n, c in enumerate(cookies):
        body["email"] = f"buyer{n}-{time.monotonic_ns()}@example.com"
        out.append((API + "/orders", json.dumps(body).encode(), [(b"cookie", c)]))
    return out


async def workers(
    app: Any,
    batch: list[tuple[str, bytes, Any]],
    concurrency: int,
    statuses: collections.Counter[int],
    deadline: float | None,
) -> None:
    """Send ``batch`` with ``concurrency`` requests in flight (closed loop, like wrk), until ``deadline``."""
    pending = iter(batch)

    async def worker() -> None:
        for path, body, headers in pending:
            if deadline is not None and time.monotonic() > deadline:
                return
            status, _ = await send(app, "POST", path, body, headers)
            statuses[status] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def timed(app: Any, batch: list[tuple[str, bytes, Any]], concurrency: int) -> tuple[float, float, Any]:
    statuses: collections.Counter[int] = collections.Counter()
    wall, cpu = time.perf_counter(), time.process_time()
    await workers(app, batch, concurrency, statuses, deadline=None)
    return (time.perf_counter() - wall) / len(batch), (time.process_time() - cpu) / len(batch), dict(statuses)


PACKAGES = (
    ("select.epoll", "event loop: waiting in epoll (idle, or the aiosqlite thread working)"),
    ("_queue.SimpleQueue", "aiosqlite: hand-off to its thread (SimpleQueue.put)"),
    ("/asyncio/", "asyncio event loop"),
    ("/aiosqlite/", "aiosqlite"),
    ("/sqlalchemy/orm/", "SQLAlchemy ORM"),
    ("/sqlalchemy/", "SQLAlchemy Core/engine"),
    ("/greenlet", "greenlet"),
    ("/fastapi/", "FastAPI"),
    ("/starlette/", "Starlette"),
    ("/pydantic", "pydantic"),
    ("/structlog/", "logging"),
    ("/logging/", "logging"),
    ("/mercato/", "mercato code (self time)"),
    ("profile_", "benchmark harness"),
)


def by_package(stats: pstats.Stats, requests: int) -> None:
    """Self time (cProfile ``tottime``) summed per package, in µs per request (cProfile's overhead included)."""
    totals: collections.Counter[str] = collections.Counter()
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename if filename != "~" else name
        label = next((label for key, label in PACKAGES if key in where), "other (builtins, stdlib)")
        totals[label] += tottime
    for label, seconds in totals.most_common():
        print(f"    {seconds / requests * 1e6:8.0f} µs/request  {label}")


def report_yappi(yappi: Any, top: int, requests: int) -> None:
    """Per thread CPU, then the ``top`` functions by inclusive CPU (µs per request) on every thread."""
    for thread in yappi.get_thread_stats():
        print(f"    thread {thread.name:<24} {thread.ttot / requests * 1e6:8.0f} µs CPU/request")
    stats = yappi.get_func_stats()
    stats.sort("ttot", "desc")
    for stat in list(stats)[:top]:
        where = f"{Path(stat.module).name}:{stat.lineno}"
        print(
            f"    {stat.ttot / requests * 1e6:8.0f} incl {stat.tsub / requests * 1e6:7.0f} self "
            f"{stat.ncall / requests:6.1f} calls  {stat.name} ({where})"
        )


async def main(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="mercato-profile-selling-"))
    env = server_env(data_dir)
    env.pop("PYTHONUNBUFFERED", None)
    if args.no_jobs:
        env["MERCATO_RUN_JOBS"] = "false"
    try:
        migrate(env, data_dir)
        seed(env, data_dir, 0)
        for key in [k for k in os.environ if k.startswith("MERCATO_")]:
            del os.environ[key]
        os.environ.update({k: v for k, v in env.items() if k.startswith("MERCATO_")})
        from mercato.app import create_app
        from mercato.config import Settings

        app = create_app(Settings.load())
        services = app.state.services
        statements = Statements(services.db.engine, services.db.write_engine)
        async with app.router.lifespan_context(app):
            import httpx

            logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1" + API) as client:
                fields = dict(
                    line.split(": ", 1)
                    for line in (data_dir / "demo-credentials.txt").read_text().splitlines()
                    if ": " in line
                )
                credentials = {"email": fields["email"], "password": fields["password"]}
                login = await client.post("/auth/login", json=credentials)
                client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
                units: list[dict[str, Any]] = []
                page = 1
                while True:
                    body = (await client.get("/products", params={"limit": 100, "page": page})).json()
                    for product in body["data"]:
                        if product["variants"]:
                            units += [{"product_id": product["id"], "variant_id": v["id"]} for v in product["variants"]]
                        else:
                            units.append({"product_id": product["id"], "variant_id": None})
                    if page >= body["pagination"]["total_pages"]:
                        break
                    page += 1
                for n, unit in enumerate(units):
                    stock = {"on_hand": 1_000_000 if n == 1 else 10_000, "reason": "profile"}
                    if unit["variant_id"]:
                        stock["variant_id"] = unit["variant_id"]
                    assert (await client.put(f"/inventory/{unit['product_id']}", json=stock)).status_code == 200
            spread = units[2:]
            for scenario in args.only.split(","):
                total = args.requests * args.rounds + 1
                if scenario == "cart_new":
                    cookies = [b""] * total
                elif scenario == "cart_existing":
                    cookies = await fill_carts(app, [units[1]], min(total, 500))
                    cookies = [cookies[i % len(cookies)] for i in range(total)]
                else:
                    cookies = await fill_carts(app, spread, total)
                batch = requests_for(scenario, units, cookies)
                # one request alone, statements recorded
                await asyncio.sleep(0.2)
                statements.log.clear()
                statements.on = True
                path, body, headers = batch.pop()
                status, _ = await send(app, "POST", path, body, headers)
                statements.on = False
                sql = list(statements.log)
                best_wall = best_cpu = float("inf")
                statuses: dict[int, int] = {}
                if args.yappi:
                    import yappi  # not a project dependency: pip install yappi, or PYTHONPATH to it

                    yappi.set_clock_type("cpu")
                    yappi.start()
                if args.cprofile:
                    profiler = cProfile.Profile()
                    profiler.enable()
                for r in range(args.rounds):
                    part = batch[r * args.requests : (r + 1) * args.requests]
                    wall, cpu, statuses = await timed(app, part, args.concurrency)
                    best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
                print(
                    f"{scenario:<14} wall {best_wall * 1e6:8.0f} µs/request ({1 / best_wall:5.0f}/s), "
                    f"CPU {best_cpu * 1e6:7.0f} µs/request; statuses {statuses}; "
                    f"{len(sql)} statements in one request (status {status}), "
                    f"{sum(t for _, t in sql) * 1e6:.0f} µs between cursor events"
                )
                if args.cprofile:
                    profiler.disable()
                    print(f"  cProfile of the event loop thread, {args.requests * args.rounds} requests:")
                    stats = pstats.Stats(profiler)
                    by_package(stats, args.requests * args.rounds)
                    stats.strip_dirs().sort_stats(args.sort).print_stats(args.cprofile)
                if args.yappi:
                    yappi.stop()
                    report_yappi(yappi, args.yappi, args.requests * args.rounds)
                    yappi.clear_stats()
                if args.sql:
                    for text, took in sql:
                        print(f"    {took * 1e6:6.0f} µs  {text}")
                if args.hold:
                    if scenario == "cart_new":
                        more = [b""] * 100_000
                    elif scenario == "cart_existing":
                        more = [cookies[i % len(cookies)] for i in range(100_000)]
                    else:
                        more = await fill_carts(app, spread, int(args.hold * 150))
                    held = requests_for(scenario, units, more)
                    print(f"measuring {scenario} pid {os.getpid()}", flush=True)
                    counted: collections.Counter[int] = collections.Counter()
                    await workers(app, held, args.concurrency, counted, deadline=time.monotonic() + args.hold)
                    print(f"done {dict(counted)}", flush=True)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per timing round (default 400)")
    parser.add_argument("--rounds", type=int, default=2, help="timing rounds per scenario; the best is kept")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight at once (default 32)")
    parser.add_argument("--only", default="cart_new,cart_existing,checkout", help="scenarios, comma-separated")
    parser.add_argument("--sql", action="store_true", help="list the statements of one request of each scenario")
    parser.add_argument("--cprofile", type=int, default=0, help="cProfile the timed rounds: top N functions")
    parser.add_argument("--sort", default="tottime", help="pstats sort key for --cprofile")
    parser.add_argument("--no-jobs", action="store_true", help="MERCATO_RUN_JOBS=false (no in-process job runner)")
    parser.add_argument("--yappi", type=int, default=0, help="yappi CPU profile of the timed rounds: top N")
    parser.add_argument("--hold", type=float, default=0, help="then send the scenario for this many seconds more")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
