"""Selling benchmark: cart writes and checkouts against one real ``mercato serve`` process, driven by wrk.

On a fresh database (SQLite by default, or PostgreSQL) with the demo store, measures ``POST /api/v1/cart/items``
at ``--connections`` (a new guest cart per request, and adds to existing guest carts), then order placement
(``POST /api/v1/orders``, guest checkout) with one prepared cart per request: distinct customers spread over the
demo catalog, then every buyer on one hot product with less stock than buyers. After each checkout run it checks
through the admin API that no unit was oversold and that the units reserved equal the orders placed. It also
measures the machine's SQLite commit ceiling (WAL, ``synchronous=FULL``, one small INSERT per transaction, in the
benchmark database's directory) and reports orders/s as a ratio to it. Prints a table and a JSON line, and writes
``bench/results/selling-<database>-<UTC timestamp>.json``.

Usage::

    .venv/bin/python bench/selling.py [--database sqlite|postgres] [--duration 15] [--connections 32]

All traffic goes to 127.0.0.1; the server is always stopped (and the PostgreSQL database dropped) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from catalog import drop_pg_database, seed, store_env
from run import (  # bench/ is not a package: run as a script, its directory is on sys.path
    BENCH_DIR,
    WRK_MISSING,
    Server,
    cpu_seconds,
    machine,
    memory_kib,
    migrate,
    save_report,
    start_server,
    stop_server,
    tail,
)

SELLING_LUA = BENCH_DIR / "selling.lua"
API = "/api/v1"
CART_COOKIE = "mercato_cart"
REASON = "selling benchmark"
ADDRESS = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}
CART_P95_LIMIT_MS = 100.0  # source 000
CART_P95_AIM_MS = 20.0
ORDERS_PER_S = 100.0
ORDER_P99_LIMIT_MS = 500.0
#: seconds one checkout run may take at most (it ends as soon as every prepared cart is answered)
CHECKOUT_CAP_S = 300
PREPARE_ATTEMPTS = 5
#: seconds without server CPU use after which a checkout run with unanswered carts is ended
STALL_S = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--duration", type=int, default=15, help="seconds of each cart-add wrk run (default 15)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unrecorded load before each cart-add run")
    parser.add_argument("--buyers", type=int, default=3000, help="distinct-customer checkouts (default 3000)")
    parser.add_argument("--hot-buyers", type=int, default=2000, help="checkouts of the hot product (default 2000)")
    parser.add_argument("--hot-stock", type=int, default=1000, help="units of the hot product (default 1000)")
    parser.add_argument("--warmup-orders", type=int, default=200, help="unrecorded checkouts first (default 200)")
    parser.add_argument("--ceiling-seconds", type=float, default=3.0, help="length of the bare sqlite3 commit loop")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir (server log, database)")
    parser.add_argument("--no-save", action="store_true", help="do not write a JSON file under bench/results/")
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.threads, args.buyers, args.hot_buyers, args.hot_stock) < 1:
        parser.error("--duration, --connections, --threads, --buyers, --hot-buyers and --hot-stock must be positive")
    if args.warmup < 0 or args.warmup_orders < 0:
        parser.error("--warmup and --warmup-orders must not be negative")
    args.threads = min(args.threads, args.connections)
    return args


def commit_ceiling(directory: Path, seconds: float) -> dict[str, Any]:
    """Commits/s of a bare sqlite3 loop with the server's durability settings (WAL, ``synchronous=FULL``), one
    small INSERT per ``BEGIN IMMEDIATE`` transaction, in a scratch database in ``directory`` (removed after)."""
    path = directory / f"ceiling-{os.getpid()}.db"
    connection = sqlite3.connect(path, isolation_level=None)
    samples: list[float] = []
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, at REAL NOT NULL, note TEXT NOT NULL)")
        deadline = time.perf_counter() + seconds
        while (started := time.perf_counter()) < deadline:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO t (at, note) VALUES (?, ?)", (started, "order placed"))
            connection.execute("COMMIT")
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        connection.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    ordered = sorted(samples)
    return {
        "commits": len(samples),
        "commits_per_s": round(len(samples) / (sum(samples) / 1000), 1),
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[max(0, -(-len(ordered) * 99 // 100) - 1)], 3),
    }


def admin_client(server: Server, data_dir: Path) -> httpx.Client:
    """A client signed in as the demo admin (password from ``<data dir>/demo-credentials.txt``)."""
    fields = dict(
        line.split(": ", 1) for line in (data_dir / "demo-credentials.txt").read_text().splitlines() if ": " in line
    )
    response = httpx.post(
        server.base_url + API + "/auth/login",
        json={"email": fields["email"], "password": fields["password"]},
        timeout=30,
    )
    if response.status_code != 200:
        raise RuntimeError(f"admin login answered {response.status_code}: {response.text}")
    token = response.json()["access_token"]
    return httpx.Client(base_url=server.base_url + API, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def sellable_units(server: Server) -> list[dict[str, Any]]:
    """Every unit a guest can put in a cart: active products without variants, and each variant of the others."""
    units: list[dict[str, Any]] = []
    page = 1
    while True:
        response = httpx.get(server.base_url + API + "/products", params={"limit": 100, "page": page}, timeout=30)
        response.raise_for_status()
        body = response.json()
        for product in body["data"]:
            if product["variants"]:
                units += [{"product_id": product["id"], "variant_id": v["id"]} for v in product["variants"]]
            else:
                units.append({"product_id": product["id"], "variant_id": None})
        if page >= body["pagination"]["total_pages"]:
            return units
        page += 1


def set_stock(admin: httpx.Client, unit: dict[str, Any], on_hand: int) -> None:
    """``PUT /inventory/{product_id}``: the unit's on-hand count."""
    body: dict[str, Any] = {"on_hand": on_hand, "reason": REASON}
    if unit["variant_id"]:
        body["variant_id"] = unit["variant_id"]
    response = admin.put(f"/inventory/{unit['product_id']}", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"PUT /inventory/{unit['product_id']} answered {response.status_code}: {response.text}")


def inventory(admin: httpx.Client) -> dict[tuple[str, str | None], dict[str, Any]]:
    """Every inventory row (``GET /inventory`` as admin), keyed by (product_id, variant_id)."""
    rows: dict[tuple[str, str | None], dict[str, Any]] = {}
    page = 1
    while True:
        response = admin.get("/inventory", params={"limit": 100, "page": page})
        response.raise_for_status()
        body = response.json()
        rows.update({(row["product_id"], row["variant_id"]): row for row in body["data"]})
        if page >= body["pagination"]["total_pages"]:
            return rows
        page += 1


def orders_total(admin: httpx.Client) -> int | None:
    """How many orders exist (``GET /admin/orders``), or None when the endpoint does not answer 200."""
    response = admin.get("/admin/orders", params={"limit": 1})
    return int(response.json()["pagination"]["total"]) if response.status_code == 200 else None


def cart_body(unit: dict[str, Any]) -> dict[str, Any]:
    """``POST /cart/items`` body: one unit of ``unit``."""
    body: dict[str, Any] = {"product_id": unit["product_id"], "quantity": 1}
    if unit["variant_id"]:
        body["variant_id"] = unit["variant_id"]
    return body


async def _fill_carts(base_url: str, units: list[dict[str, Any]], count: int, failures: list[str]) -> list[str]:
    # one client per cart (a client keeps the cookies it gets), all sharing one pool of 16 connections
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=16))
    gate = asyncio.Semaphore(16)

    async def one(index: int) -> str:
        client = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=60)
        for _ in range(PREPARE_ATTEMPTS):
            async with gate:
                response = await client.post(API + "/cart/items", json=cart_body(units[index % len(units)]))
            if response.status_code == 201 and CART_COOKIE in response.cookies:
                return str(response.cookies[CART_COOKIE])
            failures.append(f"{response.status_code}: {response.text[:300]}")
        raise RuntimeError(f"POST /cart/items failed {PREPARE_ATTEMPTS} times, last: {failures[-1]}")

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        await transport.aclose()


def fill_carts(server: Server, units: list[dict[str, Any]], count: int, path: Path, failures: list[str]) -> Path:
    """Create ``count`` guest carts holding one unit each (round-robin over ``units``); write their cookies to
    ``path``, one a line. A failed cart add is retried (up to 5 times) and recorded in ``failures``."""
    cookies = asyncio.run(_fill_carts(server.base_url, units, count, failures))
    path.write_text("\n".join(cookies) + "\n")
    return path


def run_wrk(
    server: Server,
    path: str,
    body: str,
    cookies: Path | None,
    *,
    args: argparse.Namespace,
    work_dir: Path,
    duration: int,
    once: bool,
) -> dict[str, Any]:
    """Run wrk with ``selling.lua``; returns its BENCH_JSON numbers plus the server's CPU per request."""
    body_file = work_dir / "body.json"
    body_file.write_text(body)
    threads = args.threads
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(args.connections),
        "-d",
        f"{duration}s",
        "--timeout",
        "30s",
        "-s",
        str(SELLING_LUA),
        server.base_url + API + path,
        "--",
        API + path,
        str(body_file),
        str(cookies) if cookies else "-",
        str(threads),
        "once" if once else "cycle",
    ]
    markers = [Path(f"{cookies}.done-{i}") for i in range(threads)] if once and cookies else []
    for marker in markers:
        marker.unlink(missing_ok=True)
    cpu_before = cpu_seconds(server.process.pid)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
        if markers:
            stalled = wait_for_markers(wrk, markers, server)
            wrk.send_signal(signal.SIGINT)
        stdout, stderr = wrk.communicate(timeout=duration + 120)
    cpu = cpu_seconds(server.process.pid) - cpu_before
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk failed ({wrk.returncode}): {stderr or stdout}")
    for line in stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            result["statuses"] = {int(k): v for k, v in sorted(result["statuses"].items())}
            if markers:
                # wrk's duration includes waiting for the stragglers' markers; active_s is first send → last answer
                result["wrk_duration_s"], result["duration_s"] = result["duration_s"], result["active_s"]
                result["rps"] = round(result["requests"] / max(result["active_s"], 1e-3), 1)
                result["stalled"] = stalled
            result["server_cpu_us_per_request"] = round(1e6 * cpu / max(result["requests"], 1), 1)
            result["server_cpu_utilisation"] = round(cpu / result["duration_s"], 3)
            result["memory"] = memory_kib(server.process.pid)
            result["connections"] = args.connections
            return result
    raise RuntimeError(f"wrk printed no BENCH_JSON line:\n{stdout}\n{stderr}")


def wait_for_markers(wrk: subprocess.Popen[str], markers: list[Path], server: Server) -> bool:
    """Wait until every wrk thread marked its carts answered (wrk sleeps for -d even when all threads stopped).
    Returns True when the run stalled instead: some request was lost (e.g. a keep-alive connection closed by the
    server as it was reused), so the server stayed idle for STALL_S seconds with markers missing."""
    idle_since, cpu = time.monotonic(), cpu_seconds(server.process.pid)
    while wrk.poll() is None and not all(marker.exists() for marker in markers):
        time.sleep(0.02)
        now, used = time.monotonic(), cpu_seconds(server.process.pid)
        if used - cpu > 0.02:
            idle_since, cpu = now, used
        elif now - idle_since > STALL_S:
            return True
    return False


def cart_add(
    server: Server, name: str, unit: dict[str, Any], cookies: Path | None, args: argparse.Namespace, work_dir: Path
) -> dict[str, Any]:
    """``POST /cart/items`` for ``--duration`` seconds after ``--warmup``: without cookies every request makes a
    new guest cart; with ``cookies`` the requests add to those carts round-robin."""
    body = json.dumps(cart_body(unit))
    print(
        f"  {name}: {args.warmup} s warm-up, then {args.duration} s at {args.connections} connections ...", flush=True
    )
    if args.warmup:
        run_wrk(server, "/cart/items", body, cookies, args=args, work_dir=work_dir, duration=args.warmup, once=False)
    return run_wrk(
        server, "/cart/items", body, cookies, args=args, work_dir=work_dir, duration=args.duration, once=False
    )


def checkout(server: Server, cookies: Path, args: argparse.Namespace, work_dir: Path, tag: str) -> dict[str, Any]:
    """``POST /orders`` once per cart in ``cookies`` (guest checkout, a distinct email each)."""
    body = json.dumps({"shipping_address": ADDRESS, "email": f"buyer-{tag}-{{n}}@example.com"})
    result = run_wrk(server, "/orders", body, cookies, args=args, work_dir=work_dir, duration=CHECKOUT_CAP_S, once=True)
    result["carts"] = len(cookies.read_text().split())
    result["complete"] = result["requests"] == result["carts"]
    return result


def verify(
    before: dict[tuple[str, str | None], dict[str, Any]],
    after: dict[tuple[str, str | None], dict[str, Any]],
    placed: int,
) -> dict[str, Any]:
    """Compare the inventory before and after a checkout run in which ``placed`` orders of one unit each were
    answered 201: units reserved must equal ``placed``, and no unit may have ``available`` below zero."""
    reserved = sum(after[key]["reserved"] - before[key]["reserved"] for key in after if key in before)
    negative = {f"{k[0]}/{k[1]}": row["available"] for k, row in after.items() if row["available"] < 0}
    return {
        "orders_201": placed,
        "units_reserved": reserved,
        "reserved_equals_orders": reserved == placed,
        "units_with_negative_available": negative,
        "oversold_units": -sum(negative.values()) + max(0, reserved - placed),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Create and seed the database, run every phase against one server, always stop it and clean up."""
    if shutil.which("wrk") is None:
        sys.exit(WRK_MISSING)
    report: dict[str, Any] = {
        "benchmark": "selling",
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "config": {
            "database": args.database,
            "duration_s": args.duration,
            "connections": args.connections,
            "threads": args.threads,
            "warmup_s": args.warmup,
            "buyers": args.buyers,
            "hot_buyers": args.hot_buyers,
            "hot_stock": args.hot_stock,
            "warmup_orders": args.warmup_orders,
            "load_generator": "wrk + bench/selling.lua (one prepared guest cart per checkout)",
            "server": "mercato serve --workers 1, MERCATO_ENV=production, MERCATO_RATE_LIMITS=false",
        },
        "results": {},
        "checks": {},
        "memory": {},
    }
    data_dir = Path(tempfile.mkdtemp(prefix="mercato-selling-bench-"))
    pg_name: str | None = None
    server: Server | None = None
    try:
        env, pg_name = store_env(args.database, data_dir)
        print(f"data dir {data_dir}; database {args.database} {pg_name or ''}; migrating, seeding --demo ...")
        migrate(env, data_dir)
        report["seed"] = seed(env, data_dir, 0)
        print(f"  seeded in {report['seed']['seconds']} s; bare sqlite3 commit loop ...", flush=True)
        report["commit_ceiling"] = [commit_ceiling(data_dir, args.ceiling_seconds)]

        server = start_server(env, data_dir, data_dir / "server.log")
        report["memory"]["idle"] = memory_kib(server.process.pid)
        admin = admin_client(server, data_dir)
        units = sellable_units(server)
        hot, cart_unit, spread = units[0], units[1], units[2:]
        report["config"]["units_spread_over"] = len(spread)
        per_unit = -(-(args.buyers + args.warmup_orders) // len(spread)) + 10
        print(f"server pid {server.process.pid}; {len(units)} sellable units; setting stock ...", flush=True)
        for unit in spread:
            set_stock(admin, unit, per_unit)
        set_stock(admin, cart_unit, 1_000_000)
        set_stock(admin, hot, args.hot_stock)
        results = report["results"]
        prep_failures: list[str] = report["checks"].setdefault("cart_preparation_failures", [])

        results["cart_add_new"] = cart_add(server, "cart add, new guest cart", cart_unit, None, args, data_dir)
        existing = fill_carts(server, [cart_unit], 1000, data_dir / "cart-cookies.txt", prep_failures)
        results["cart_add_existing"] = cart_add(
            server, "cart add, existing guest cart", cart_unit, existing, args, data_dir
        )
        report["memory"]["after_cart"] = memory_kib(server.process.pid)

        print(f"  preparing {args.warmup_orders} + {args.buyers} carts over {len(spread)} units ...", flush=True)
        if args.warmup_orders:
            warm = fill_carts(server, spread, args.warmup_orders, data_dir / "warm-cookies.txt", prep_failures)
            warm_result = checkout(server, warm, args, data_dir, "warm")
            report["checks"]["warmup_statuses"] = warm_result["statuses"]
        buyers = fill_carts(server, spread, args.buyers, data_dir / "buyer-cookies.txt", prep_failures)
        before, orders_before = inventory(admin), orders_total(admin)
        print(f"  checkout, distinct customers: {args.buyers} orders at {args.connections} connections ...")
        results["orders_distinct"] = checkout(server, buyers, args, data_dir, "distinct")
        placed = results["orders_distinct"]["statuses"].get(201, 0)
        report["checks"]["orders_distinct"] = verify(before, inventory(admin), placed)
        report["checks"]["orders_distinct"]["orders_created"] = _delta(orders_total(admin), orders_before)

        print(f"  preparing {args.hot_buyers} carts of the hot product ({args.hot_stock} units) ...", flush=True)
        hot_buyers = fill_carts(server, [hot], args.hot_buyers, data_dir / "hot-cookies.txt", prep_failures)
        before, orders_before = inventory(admin), orders_total(admin)
        print(f"  checkout, hot product: {args.hot_buyers} buyers at {args.connections} connections ...")
        results["orders_hot"] = checkout(server, hot_buyers, args, data_dir, "hot")
        after = inventory(admin)
        placed = results["orders_hot"]["statuses"].get(201, 0)
        check = verify(before, after, placed)
        hot_row = after[(hot["product_id"], hot["variant_id"])]
        check["hot_unit"] = {k: hot_row[k] for k in ("on_hand", "reserved", "available")}
        check["sold_out_exactly"] = hot_row["reserved"] == args.hot_stock == placed and hot_row["available"] == 0
        check["refused_409"] = results["orders_hot"]["statuses"].get(409, 0)
        check["orders_created"] = _delta(orders_total(admin), orders_before)
        report["checks"]["orders_hot"] = check
        report["memory"]["end"] = memory_kib(server.process.pid)
        admin.close()
        stop_server(server)
        report["commit_ceiling"].append(commit_ceiling(data_dir, args.ceiling_seconds))
        report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if server is not None:
            stop_server(server)
            log = tail(server.log_path, 100_000).splitlines()
            report["server_log_errors"] = [_short(line) for line in log if '"level": "error"' in line][:10]
            report["server_log_error_count"] = sum('"level": "error"' in line for line in log)
        if pg_name is not None:
            drop_pg_database(pg_name)
        if args.keep:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    evaluate(report)
    return report


def _short(line: str) -> str:
    """A server log error line as ``time path event: last line of the exception``."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line[:300]
    last = (entry.get("exception") or "").strip().splitlines()[-3:]
    return f"{entry.get('timestamp')} {entry.get('method', '')} {entry.get('path', '')} {entry.get('event')}: {last}"


def _delta(after: int | None, before: int | None) -> int | None:
    return None if after is None or before is None else after - before


def evaluate(report: dict[str, Any]) -> None:
    """Derive orders/s and the ceiling ratio, and compare with the issue's targets (``report['targets']``)."""
    results, checks = report["results"], report["checks"]
    ceilings = [c["commits_per_s"] for c in report.get("commit_ceiling", [])]
    ceiling = statistics.fmean(ceilings) if ceilings else None
    report["commit_ceiling_per_s"] = round(ceiling, 1) if ceiling else None
    for name in ("orders_distinct", "orders_hot"):
        r = results.get(name)
        if r is None:
            continue
        r["orders_per_s"] = round(r["statuses"].get(201, 0) / r["duration_s"], 1)
        r["attempts_per_s"] = r["rps"]
        if ceiling and report["config"]["database"] == "sqlite":
            r["orders_to_ceiling"] = round(r["orders_per_s"] / ceiling, 4)
    targets: list[dict[str, Any]] = []
    for scenario, label in (("cart_add_new", "new cart"), ("cart_add_existing", "existing cart")):
        cart = results.get(scenario)
        if cart is None:
            continue
        for limit, what in ((CART_P95_LIMIT_MS, "source 000"), (CART_P95_AIM_MS, "aim")):
            targets.append(
                {
                    "target": f"cart add ({label}) p95 < {limit:g} ms ({what})",
                    "value": cart["p95_ms"],
                    "met": cart["p95_ms"] < limit,
                }
            )
    for name, label in (("orders_distinct", "distinct customers"), ("orders_hot", "hot product")):
        r = results.get(name)
        if r is None:
            continue
        rate = r["orders_per_s"] if name == "orders_distinct" else r["attempts_per_s"]
        unit = "orders/s" if name == "orders_distinct" else "checkouts/s (201 + 409)"
        targets.append({"target": f"{label}: ≥ {ORDERS_PER_S:g} {unit}", "value": rate, "met": rate >= ORDERS_PER_S})
        targets.append(
            {
                "target": f"{label}: p99 ≤ {ORDER_P99_LIMIT_MS:g} ms",
                "value": r["p99_ms"],
                "met": r["p99_ms"] <= ORDER_P99_LIMIT_MS,
            }
        )
        c = checks.get(name, {})
        targets.append(
            {
                "target": f"{label}: 0 oversold, reserved = 201s",
                "value": c.get("oversold_units"),
                "met": c.get("oversold_units") == 0 and bool(c.get("reserved_equals_orders")),
            }
        )
    report["targets"] = targets


def print_report(report: dict[str, Any]) -> None:
    """The human-readable tables."""
    m, cfg = report["machine"], report["config"]
    print()
    print(f"Mercato selling benchmark — {report['started_at']} — {cfg['database']}")
    print(
        f"  {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['wrk']}, commit {m['git_commit']}"
        f"{' + uncommitted src changes ' + m['src_diff_sha256'] if m['src_dirty'] else ''}"
    )
    print(f"  load average at start {m['load_average_at_start']}, at end {m.get('load_average_at_end')}")
    print(f"  load generator: {cfg['load_generator']}")
    print()
    print(
        f"  {'scenario':<20}{'conns':>6}{'requests':>9}{'s':>7}{'req/s':>8}{'orders/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'max ms':>9}{'errors':>7}{'CPU µs/req':>11}{'RSS MiB':>8}  statuses"
    )
    for name, r in report["results"].items():
        errors = sum(v for k, v in r["errors"].items() if k != "status")
        orders = f"{r['orders_per_s']:>9.1f}" if "orders_per_s" in r else f"{'':>9}"
        print(
            f"  {name:<20}{r['connections']:>6}{r['requests']:>9}{r['duration_s']:>7.1f}{r['rps']:>8.0f}{orders}"
            f"{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['max_ms']:>9.0f}{errors:>7}"
            f"{r['server_cpu_us_per_request']:>11.0f}{r['memory']['rss_kib'] / 1024:>8.0f}  {r['statuses']}"
        )
    print()
    for c in report.get("commit_ceiling", []):
        rate, p50 = c["commits_per_s"], c["p50_ms"]
        print(f"  bare sqlite3 commit loop (WAL, synchronous=FULL): {rate:.0f} commits/s, p50 {p50} ms")
    for name in ("orders_distinct", "orders_hot"):
        r = report["results"].get(name)
        if r and "orders_to_ceiling" in r:
            print(f"  {name}: {r['orders_per_s']} orders/s = {r['orders_to_ceiling']:.1%} of the commit ceiling")
    for name, c in report.get("checks", {}).items():
        print(f"  check {name}: {c}")
    mem = report["memory"]
    peak = max((v["peak_rss_kib"] for v in mem.values()), default=0) / 1024
    print(f"  server memory: idle {mem.get('idle', {}).get('rss_kib', 0) / 1024:.0f} MiB, peak {peak:.0f} MiB (VmHWM)")
    print()
    for t in report.get("targets", []):
        print(f"  {'MET ' if t['met'] else 'MISS'}  {t['target']:<52}{t['value']!s:>10}")
    if report.get("server_log_errors"):
        count, first = report["server_log_error_count"], report["server_log_errors"][:3]
        print(f"\n  server log: {count} error lines, first: {first}")
    if report.get("saved_to"):
        print(f"\n  saved {report['saved_to']}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run, save the JSON, print the table and the JSON line."""
    args = parse_args(argv)
    report = run(args)
    if not args.no_save:
        save_report(report, f"selling-{args.database}")
    print_report(report)
    print("BENCH_JSON " + json.dumps(summary(report), separators=(",", ":")))


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, for one JSON line."""
    line: dict[str, Any] = {"benchmark": "selling", "database": report["config"]["database"]}
    line["started_at"] = report["started_at"]
    for name, r in report["results"].items():
        line[name] = {k: r.get(k) for k in ("rps", "orders_per_s", "p50_ms", "p95_ms", "p99_ms", "statuses")}
    for name, c in report["checks"].items():
        if "oversold_units" in c:
            line[name]["oversold_units"] = c["oversold_units"]
    line["commit_ceiling_per_s"] = report.get("commit_ceiling_per_s")
    line["peak_rss_mib"] = round(max((v["peak_rss_kib"] for v in report["memory"].values()), default=0) / 1024)
    line["targets_met"] = sum(t["met"] for t in report.get("targets", []))
    line["targets_missed"] = sum(not t["met"] for t in report.get("targets", []))
    return line


if __name__ == "__main__":
    main()
