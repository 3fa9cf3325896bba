"""Full checkout benchmark (issue 5): guest cart → order → payment with ``tok_visa`` against one real
``mercato serve`` process, on SQLite (default) or PostgreSQL, with the demo store.

Each virtual customer loops: ``POST /cart/items`` (a new guest cart), ``POST /orders`` (guest email, address
in a country every demo shipping method serves), ``POST /payments`` with ``X-Order-Token`` and an
``Idempotency-Key``. Reports complete checkouts/s, the latency of each request (p50/p95/p99) and of the whole
checkout, the status codes, the server's CPU and RSS, then checks through the admin API that every paid order is
``processing``/``paid`` and runs ``mercato check`` (money reconciles, stock consistent). The load generator is
Python (httpx, one process) on the same machine: its CPU is reported too, since it competes with the server.

Usage::

    .venv/bin/python bench/checkout.py [--database sqlite|postgres] [--checkouts 1500] [--concurrency 16]

Prints a table and a JSON line and writes ``bench/results/checkout-<database>-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from catalog import drop_pg_database, seed, store_env
from run import (  # bench/ is not a package: run as a script, its directory is on sys.path
    Server,
    cpu_seconds,
    machine,
    memory_kib,
    mercato_command,
    migrate,
    save_report,
    start_server,
    stop_server,
    summarize,
    tail,
)
from selling import ADDRESS, admin_client, cart_body, orders_total, sellable_units, set_stock

API = "/api/v1"
STEPS = ("cart", "order", "payment")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--checkouts", type=int, default=1500, help="recorded checkouts (default 1500)")
    parser.add_argument("--warmup", type=int, default=100, help="unrecorded checkouts first (default 100)")
    parser.add_argument("--concurrency", type=int, default=16, help="customers checking out at once (default 16)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument("--no-save", action="store_true", help="do not write a JSON file under bench/results/")
    args = parser.parse_args(argv)
    if min(args.checkouts, args.concurrency) < 1 or args.warmup < 0:
        parser.error("--checkouts and --concurrency must be positive, --warmup not negative")
    return args


async def one_checkout(http: httpx.AsyncClient, unit: dict[str, Any], timings: dict[str, list[float]]) -> str:
    """One guest's cart → order → payment; returns ``ok`` or the first failing step and status."""
    http.cookies.clear()
    started = time.perf_counter()
    response = await http.post(f"{API}/cart/items", json=cart_body(unit))
    timings["cart"].append((time.perf_counter() - started) * 1000)
    if response.status_code != 201:
        return f"cart {response.status_code}"
    at = time.perf_counter()
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    response = await http.post(
        f"{API}/orders",
        json={"email": email, "shipping_address": ADDRESS},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    timings["order"].append((time.perf_counter() - at) * 1000)
    if response.status_code != 201:
        return f"order {response.status_code}"
    order = response.json()
    at = time.perf_counter()
    response = await http.post(
        f"{API}/payments",
        json={"order_id": order["id"], "payment_token": "tok_visa"},
        headers={"X-Order-Token": order["order_token"], "Idempotency-Key": str(uuid.uuid4())},
    )
    timings["payment"].append((time.perf_counter() - at) * 1000)
    if response.status_code != 201:
        return f"payment {response.status_code}"
    timings["checkout"].append((time.perf_counter() - started) * 1000)
    return "ok"


async def drive(base_url: str, units: list[dict[str, Any]], count: int, concurrency: int) -> dict[str, Any]:
    """Run ``count`` checkouts with ``concurrency`` customers at once; timings in milliseconds."""
    timings: dict[str, list[float]] = {step: [] for step in (*STEPS, "checkout")}
    outcomes: dict[str, int] = {}
    next_index = 0

    async def customer() -> None:
        nonlocal next_index
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            while next_index < count:
                index = next_index
                next_index += 1
                outcome = await one_checkout(http, units[index % len(units)], timings)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(customer() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "checkouts": count,
        "seconds": round(elapsed, 2),
        "checkouts_per_s": round(outcomes.get("ok", 0) / elapsed, 1),
        "requests_per_s": round(sum(len(timings[s]) for s in STEPS) / elapsed, 1),
        "outcomes": outcomes,
        "latency_ms": {name: summarize(samples) for name, samples in timings.items() if samples},
    }


def paid_orders(admin: httpx.Client) -> int:
    """How many orders are ``processing`` (paid web orders move there)."""
    response = admin.get("/admin/orders", params={"limit": 1, "status": "processing"})
    response.raise_for_status()
    return int(response.json()["pagination"]["total"])


def mercato_check(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """``mercato check``: the data invariants (money reconciles among them); exit code and last lines."""
    done = subprocess.run(
        [*mercato_command(), "check"], env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    return {"exit_code": done.returncode, "output": (done.stdout + done.stderr).strip().splitlines()[-5:]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Seed, start the server, warm up, measure, verify; always stop the server and clean up."""
    report: dict[str, Any] = {
        "benchmark": "checkout",
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "config": {
            "database": args.database,
            "checkouts": args.checkouts,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "load_generator": "python httpx (one process, same machine)",
            "server": "mercato serve --workers 1, MERCATO_ENV=production, MERCATO_RATE_LIMITS=false, test gateway",
        },
    }
    data_dir = Path(tempfile.mkdtemp(prefix="mercato-checkout-bench-"))
    pg_name: str | None = None
    server: Server | None = None
    try:
        env, pg_name = store_env(args.database, data_dir)
        print(f"data dir {data_dir}; database {args.database} {pg_name or ''}; migrating, seeding --demo ...")
        migrate(env, data_dir)
        report["seed"] = seed(env, data_dir, 0)
        server = start_server(env, data_dir, data_dir / "server.log")
        report["memory"] = {"idle": memory_kib(server.process.pid)}
        admin = admin_client(server, data_dir)
        units = sellable_units(server)
        per_unit = -(-(args.checkouts + args.warmup) // len(units)) + 10
        print(f"server pid {server.process.pid}; {len(units)} units; setting stock to {per_unit} each ...", flush=True)
        for unit in units:
            set_stock(admin, unit, per_unit)
        if args.warmup:
            report["warmup"] = asyncio.run(drive(server.base_url, units, args.warmup, args.concurrency))["outcomes"]
        print(f"  {args.checkouts} checkouts at concurrency {args.concurrency} ...", flush=True)
        paid_before = paid_orders(admin)
        server_cpu = cpu_seconds(server.process.pid)
        driver_cpu = resource.getrusage(resource.RUSAGE_SELF)
        result = asyncio.run(drive(server.base_url, units, args.checkouts, args.concurrency))
        after = resource.getrusage(resource.RUSAGE_SELF)
        result["server_cpu_s"] = round(cpu_seconds(server.process.pid) - server_cpu, 2)
        result["driver_cpu_s"] = round(after.ru_utime + after.ru_stime - driver_cpu.ru_utime - driver_cpu.ru_stime, 2)
        ok = result["outcomes"].get("ok", 0)
        result["server_cpu_ms_per_checkout"] = round(1000 * result["server_cpu_s"] / max(ok, 1), 2)
        report["result"] = result
        report["memory"]["end"] = memory_kib(server.process.pid)
        report["checks"] = {
            "paid_orders_added": paid_orders(admin) - paid_before,
            "checkouts_ok": ok,
            "orders_total": orders_total(admin),
        }
        admin.close()
        stop_server(server)
        report["checks"]["mercato_check"] = mercato_check(env, data_dir)
        report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if server is not None:
            stop_server(server)
            log = tail(server.log_path, 100_000).splitlines()
            report["server_log_error_count"] = sum('"level": "error"' in line for line in log)
        if pg_name is not None:
            drop_pg_database(pg_name)
        if args.keep:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    checks = report.get("checks", {})
    report["consistent"] = (
        checks.get("paid_orders_added") == checks.get("checkouts_ok")
        and checks.get("mercato_check", {}).get("exit_code") == 0
    )
    return report


def print_report(report: dict[str, Any]) -> None:
    """A short table of the figures, then the whole report as one JSON line."""
    result = report.get("result", {})
    print(f"\ncheckout benchmark — {report['config']['database']}, concurrency {report['config']['concurrency']}")
    print(f"  complete checkouts/s: {result.get('checkouts_per_s')}  (requests/s {result.get('requests_per_s')})")
    for name, stats in result.get("latency_ms", {}).items():
        print(
            f"  {name:9s} p50 {stats['p50_ms']:8.1f} ms   p95 {stats['p95_ms']:8.1f} ms   p99 {stats['p99_ms']:8.1f} ms"
        )
    print(f"  outcomes: {result.get('outcomes')}; server CPU/checkout {result.get('server_cpu_ms_per_checkout')} ms")
    print(f"  checks: {report.get('checks')}; consistent: {report.get('consistent')}")
    print(json.dumps(report))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run, save the JSON, print the table."""
    args = parse_args(argv)
    report = run(args)
    if not args.no_save:
        save_report(report, f"checkout-{args.database}")
    print_report(report)


if __name__ == "__main__":
    main()
