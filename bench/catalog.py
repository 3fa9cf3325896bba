"""Catalog benchmark: one real ``mercato serve`` process on a fresh, seeded database, driven by wrk.

Seeds the demo store plus ``--scale`` generated products (timed), then measures requests/s, p50/p95/p99 and the
server's resident memory for ``GET /health``, the product listing, search and one product with the catalog cache
on (the default), then restarts the server with ``MERCATO_CATALOG_CACHE_TTL=0`` and measures the listing and
search uncached at ``--connections`` and at 8 connections. Prints a table against the issue's targets and writes
``bench/results/catalog-<database>-<UTC timestamp>.json``.

Usage::

    .venv/bin/python bench/catalog.py [--scale 10000] [--duration 15] [--connections 64] [--database sqlite|postgres]

All traffic goes to 127.0.0.1; the server is always stopped at the end (and a PostgreSQL database dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from run import (  # bench/ is not a package: run as a script, its directory is on sys.path
    WRK_MISSING,
    Server,
    load_test,
    machine,
    memory_kib,
    mercato_command,
    migrate,
    save_report,
    server_env,
    start_server,
    stop_server,
    tail,
)

PG_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
LOW_CONNECTIONS = 8
RSS_LIMIT_MIB = 150
# (scenario, p95 limit in ms, connections it applies at: None = --connections)
P95_TARGETS = (
    ("health", None, None),
    ("list_cached", 50.0, None),
    ("search_cached", 50.0, None),
    ("product_cached", 50.0, None),
    ("list_uncached", 200.0, None),
    ("search_uncached", 200.0, None),
    ("list_uncached_c8", 50.0, LOW_CONNECTIONS),
    ("search_uncached_c8", 50.0, LOW_CONNECTIONS),
)
RATIO_TARGETS = (("list_cached", 0.50), ("list_uncached", 0.25))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=10000, help="generated products to seed (default 10000)")
    parser.add_argument("--duration", type=int, default=15, help="seconds of each measured wrk run (default 15)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unrecorded wrk load before each run")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--query", default=None, help="search term (default: the commonest word found)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir (logs, SQLite file)")
    parser.add_argument("--no-save", action="store_true", help="do not write a JSON file under bench/results/")
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.threads) < 1 or args.scale < 0 or args.warmup < 0:
        parser.error("--duration, --connections and --threads must be positive, --scale and --warmup not negative")
    args.threads = min(args.threads, args.connections)
    return args


async def _admin_sql(statement: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def create_pg_database() -> str:
    """Create ``mercato_bench_<random>``; returns its name."""
    name = f"mercato_bench_{secrets.token_hex(4)}"
    asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
    return name


def store_env(database: str, data_dir: Path) -> tuple[dict[str, str], str | None]:
    """The server environment of a fresh store in ``data_dir``: SQLite there, or a new PostgreSQL database for
    ``database == "postgres"`` (its name is returned so the caller drops it; None on SQLite)."""
    env = server_env(data_dir)
    if database != "postgres":
        return env, None
    name = create_pg_database()
    env["MERCATO_DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    return env, name


def drop_pg_database(name: str) -> None:
    """Drop the benchmark database, disconnecting whoever is still connected."""
    asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def seed(env: dict[str, str], cwd: Path, scale: int) -> dict[str, Any]:
    """``mercato seed --demo --scale N`` (the demo loader refuses production, so it runs as development)."""
    seed_env = {**env, "MERCATO_ENV": "development"}
    started = time.perf_counter()
    done = subprocess.run(
        [*mercato_command(), "seed", "--demo", "--scale", str(scale)],
        env=seed_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"mercato seed failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return {"scale": scale, "seconds": round(seconds, 1), "output": done.stdout.strip().splitlines()[-5:]}


def pick_query(server: Server) -> tuple[str, int]:
    """The word (≥ 4 letters) from the first 100 product names whose search finds the most products."""
    items = httpx.get(server.base_url + "/api/v1/products?limit=100", timeout=30).json()["data"]
    words = collections.Counter(
        word for item in items for word in {w.lower() for w in re.findall(r"[A-Za-z]{4,}", item["name"])}
    )
    best = ("", -1)
    for word, _ in words.most_common(8):
        total = search_total(server, word)
        if total > best[1]:
            best = (word, total)
    return best


def search_total(server: Server, q: str) -> int:
    """How many products ``q`` finds."""
    response = httpx.get(server.base_url + "/api/v1/products/search", params={"q": q, "limit": 1}, timeout=30)
    response.raise_for_status()
    return int(response.json()["pagination"]["total"])


def measure(server: Server, name: str, path: str, args: argparse.Namespace, connections: int) -> dict[str, Any]:
    """``run.load_test`` at ``connections``, plus the server's memory right after."""
    sub = argparse.Namespace(**{**vars(args), "connections": connections, "threads": min(args.threads, connections)})
    result = load_test(server, name, path, {}, sub)
    result["connections"] = connections
    result["memory"] = memory_kib(server.process.pid)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Create and seed the database, run both server phases, always stop the server and clean up."""
    if shutil.which("wrk") is None:
        sys.exit(WRK_MISSING)
    report: dict[str, Any] = {
        "benchmark": "catalog",
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "config": {
            "database": args.database,
            "scale": args.scale,
            "duration_s": args.duration,
            "connections": args.connections,
            "threads": args.threads,
            "warmup_s": args.warmup,
            "server": "mercato serve --workers 1, MERCATO_ENV=production, MERCATO_RATE_LIMITS=false",
        },
        "results": {},
        "memory": {},
    }
    data_dir = Path(tempfile.mkdtemp(prefix="mercato-catalog-bench-"))
    pg_name: str | None = None
    server: Server | None = None
    logs: list[Path] = []
    try:
        env, pg_name = store_env(args.database, data_dir)
        print(f"data dir {data_dir}; database {args.database} {pg_name or ''}; migrating ...", flush=True)
        migrate(env, data_dir)
        print(f"seeding --demo --scale {args.scale} ...", flush=True)
        report["seed"] = seed(env, data_dir, args.scale)
        print(f"  seeded in {report['seed']['seconds']} s", flush=True)

        logs.append(data_dir / "server-cached.log")
        server = start_server(env, data_dir, logs[-1])
        report["memory"]["cached_idle"] = memory_kib(server.process.pid)
        page = httpx.get(server.base_url + "/api/v1/products?limit=20", timeout=30).json()
        report["products_total"] = page["pagination"]["total"]
        product_id = page["data"][0]["id"]
        if args.query:
            query, hits = args.query, search_total(server, args.query)
        else:
            query, hits = pick_query(server)
        report["config"]["query"], report["config"]["query_hits"] = query, hits
        total = report["products_total"]
        print(f"server pid {server.process.pid}; {total} products; q={query!r} finds {hits}", flush=True)
        list_path, search_path = "/api/v1/products?limit=20", f"/api/v1/products/search?q={query}"
        results = report["results"]
        results["health"] = measure(server, "health", "/health", args, args.connections)
        results["list_cached"] = measure(server, "list_cached", list_path, args, args.connections)
        results["search_cached"] = measure(server, "search_cached", search_path, args, args.connections)
        results["product_cached"] = measure(
            server, "product_cached", f"/api/v1/products/{product_id}", args, args.connections
        )
        report["memory"]["cached_end"] = memory_kib(server.process.pid)
        stop_server(server)

        logs.append(data_dir / "server-uncached.log")
        server = start_server({**env, "MERCATO_CATALOG_CACHE_TTL": "0"}, data_dir, logs[-1])
        report["memory"]["uncached_idle"] = memory_kib(server.process.pid)
        print(f"restarted with MERCATO_CATALOG_CACHE_TTL=0: pid {server.process.pid}", flush=True)
        for connections, suffix in ((args.connections, ""), (LOW_CONNECTIONS, "_c8")):
            for name, path in (("list_uncached", list_path), ("search_uncached", search_path)):
                results[name + suffix] = measure(server, name + suffix, path, args, connections)
        report["memory"]["uncached_end"] = memory_kib(server.process.pid)
        report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if server is not None:
            stop_server(server)
        errors = []
        for log in logs:
            errors += [line for line in tail(log, 10_000).splitlines() if '"level": "error"' in line]
        report["server_log_errors"] = errors[:5]
        if pg_name is not None:
            drop_pg_database(pg_name)
        if args.keep:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    evaluate(report, args)
    return report


def evaluate(report: dict[str, Any], args: argparse.Namespace) -> None:
    """Compare every scenario with the issue's targets; store the verdicts in ``report['targets']``."""
    results = report["results"]
    targets: list[dict[str, Any]] = []
    for name, limit, connections in P95_TARGETS:
        r = results.get(name)
        if r is None or limit is None:
            continue
        targets.append(
            {
                "target": f"{name} p95 < {limit:g} ms at {connections or args.connections} connections",
                "value": r["p95_ms"],
                "met": r["p95_ms"] < limit,
            }
        )
    health = results.get("health")
    for name, ratio in RATIO_TARGETS:
        if health and name in results:
            value = results[name]["rps"] / health["rps"]
            targets.append(
                {"target": f"{name} req/s ≥ {ratio:.0%} of /health", "value": round(value, 4), "met": value >= ratio}
            )
    peak = max((m["peak_rss_kib"] for m in report["memory"].values()), default=0) / 1024
    targets.append({"target": f"server RSS ≤ {RSS_LIMIT_MIB} MB (peak VmHWM)", "value": round(peak, 1)})
    targets[-1]["met"] = peak <= RSS_LIMIT_MIB
    report["targets"] = targets


def print_report(report: dict[str, Any]) -> None:
    """The human-readable tables."""
    m, cfg = report["machine"], report["config"]
    print()
    print(f"Mercato catalog benchmark — {report['started_at']} — {cfg['database']}")
    print(
        f"  {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['wrk']}, commit {m['git_commit']}"
        f"{' + uncommitted src changes ' + m['src_diff_sha256'] if m['src_dirty'] else ''}"
    )
    print(f"  load average at start {m['load_average_at_start']}, at end {m.get('load_average_at_end')}")
    seeded = report.get("seed", {})
    print(
        f"  seed --demo --scale {cfg['scale']}: {seeded.get('seconds')} s; {report.get('products_total')} products;"
        f" search q={cfg.get('query')!r} finds {cfg.get('query_hits')}"
    )
    print()
    print(
        f"  {'scenario':<20}{'conns':>6}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>7}"
        f"{'CPU µs/req':>11}{'RSS MiB':>9}{'HWM MiB':>9}"
    )
    for name, r in report["results"].items():
        errors = sum(r["errors"].values())
        print(
            f"  {name:<20}{r['connections']:>6}{r['rps']:>8.0f}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}"
            f"{r['p99_ms']:>9.1f}{errors:>7}{r['server_cpu_us_per_request']:>11.0f}"
            f"{r['memory']['rss_kib'] / 1024:>9.0f}{r['memory']['peak_rss_kib'] / 1024:>9.0f}"
        )
    print()
    for t in report.get("targets", []):
        value = f"{t['value']:.1%}" if "of /health" in t["target"] else f"{t['value']:g}"
        print(f"  {'MET ' if t['met'] else 'MISS'}  {t['target']:<52}{value:>10}")
    if report.get("server_log_errors"):
        print(f"\n  server log errors: {report['server_log_errors']}")
    if report.get("saved_to"):
        print(f"\n  saved {report['saved_to']}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run, save the JSON, print the table."""
    args = parse_args(argv)
    report = run(args)
    if not args.no_save:
        save_report(report, f"catalog-{args.database}")
    print_report(report)


if __name__ == "__main__":
    main()
