"""Foundation benchmark: one real ``mercato serve`` process on a fresh SQLite database, driven by wrk.

Measures requests/s and p50/p95/p99 latency of ``GET /health`` (the server's ceiling: no I/O) and of
``GET /api/v1/auth/me`` with a bearer token (the session check, meant to be an in-process cache hit), the
p50/p95 of ``POST /api/v1/auth/login`` (argon2id by design), the in-process cost of one argon2id verification
with the project's parameters, and the server's resident memory. Prints a table and writes
``bench/results/foundation-<UTC timestamp>.json``.

Usage::

    .venv/bin/python bench/run.py [--duration 15] [--connections 64] [--only health,me,login]

All traffic goes to 127.0.0.1; the server is always stopped at the end, and every step has a time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
REPORT_LUA = BENCH_DIR / "report.lua"
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"
PASSWORD = "bench-password-7731"  # noqa: S105 - the throwaway benchmark user's
TARGET_RATIO = 0.40
SCENARIOS = ("health", "me", "login")
WRK_MISSING = """wrk is not installed; the HTTP benchmarks need it.
  Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y wrk
  macOS:         brew install wrk
  (or run only the login benchmark: --only login)"""


@dataclass
class Server:
    """A running ``mercato serve`` process and where it writes its log."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    rss_samples: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{HOST}:{self.port}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds of each measured wrk run (default 15)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unrecorded wrk load before each run")
    parser.add_argument("--logins", type=int, default=30, help="sequential logins timed (default 30)")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default all)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir (server log, database)")
    parser.add_argument("--no-save", action="store_true", help="do not write a JSON file under bench/results/")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when /auth/me misses the 40 %% target")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.duration < 1 or args.connections < 1 or args.threads < 1 or args.logins < 1:
        parser.error("--duration, --connections, --threads and --logins must be positive")
    args.threads = min(args.threads, args.connections)
    return args


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def mercato_command() -> list[str]:
    """The ``mercato`` console script next to this interpreter, else ``python -m mercato``."""
    script = Path(sys.executable).parent / "mercato"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mercato"]


def server_env(data_dir: Path) -> dict[str, str]:
    """The server's environment: the caller's minus any ``MERCATO_*`` (so no Redis or PostgreSQL URL leaks
    in), plus a fresh SQLite database, production mode (JSON logs at INFO, uvicorn access log off), a random
    secret and rate limits off."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MERCATO_")}
    env.update(
        {
            "MERCATO_ENV": "production",
            "MERCATO_ALLOW_TEST_GATEWAY": "true",  # the built-in gateway: benchmarks take no real money
            "MERCATO_SECRET_KEY": secrets.token_urlsafe(48),
            "MERCATO_DATA_DIR": str(data_dir),
            "MERCATO_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'mercato.db'}",
            "MERCATO_RATE_LIMITS": "false",
            "MERCATO_EMAIL_BACKEND": "file",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def migrate(env: dict[str, str], cwd: Path) -> None:
    """Run ``mercato migrate`` on the fresh database (at most 120 s)."""
    done = subprocess.run(
        [*mercato_command(), "migrate"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mercato migrate failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def start_server(env: dict[str, str], cwd: Path, log_path: Path) -> Server:
    """Start ``mercato serve --workers 1`` on a free port; wait (at most 60 s) until ``/health`` answers."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*mercato_command(), "serve", "--host", HOST, "--port", str(port), "--workers", "1"],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.base_url + "/health", timeout=1).status_code == 200:
                return server
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"the server did not answer /health within 60 s:\n{tail(log_path)}")


def stop_server(server: Server) -> None:
    """SIGTERM the server (graceful shutdown), SIGKILL its process group after 15 s."""
    process = server.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file (empty if it does not exist)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` (now) and ``VmHWM`` (peak) in KiB of ``pid`` and its children (``/proc/<pid>/status``)."""
    totals = {"VmRSS": 0, "VmHWM": 0}
    for each in [pid, *child_pids(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in totals:
                    totals[key] += int(value.split()[0])
    return {"rss_kib": totals["VmRSS"], "peak_rss_kib": totals["VmHWM"]}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far, every thread included (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (uvicorn runs in-process with one worker, so normally none)."""
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children.extend(int(c) for c in (task / "children").read_text().split())
    return children


def register(server: Server) -> tuple[str, str]:
    """Create the benchmark user; returns its access token and email."""
    email = f"bench-{secrets.token_hex(4)}@example.com"
    response = httpx.post(
        server.base_url + "/api/v1/auth/register", json={"email": email, "password": PASSWORD}, timeout=30
    )
    if response.status_code != 201:
        raise RuntimeError(f"register answered {response.status_code}: {response.text}")
    server.rss_samples["after_register"] = memory_kib(server.process.pid)
    return str(response.json()["access_token"]), email


def run_wrk(url: str, *, duration: int, connections: int, threads: int, headers: dict[str, str]) -> dict[str, Any]:
    """Run wrk against ``url`` and return the numbers its ``done`` callback printed (see report.lua)."""
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(REPORT_LUA),
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            result["non_2xx_or_3xx"] = result["errors"]["status"]
            return result
    raise RuntimeError(f"wrk printed no BENCH_JSON line:\n{done.stdout}")


def load_test(
    server: Server,
    name: str,
    path: str,
    headers: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Warm up, then measure ``path`` with wrk; checks first that the endpoint answers 200."""
    url = server.base_url + path
    probe = httpx.get(url, headers=headers, timeout=10)
    if probe.status_code != 200:
        raise RuntimeError(f"GET {path} answered {probe.status_code}: {probe.text}")
    print(
        f"  {name}: {args.warmup} s warm-up, then {args.duration} s at {args.connections} connections ...",
        flush=True,
    )
    if args.warmup:
        run_wrk(url, duration=args.warmup, connections=args.connections, threads=args.threads, headers=headers)
    cpu_before = cpu_seconds(server.process.pid)
    result = run_wrk(url, duration=args.duration, connections=args.connections, threads=args.threads, headers=headers)
    cpu = cpu_seconds(server.process.pid) - cpu_before
    result["path"] = path
    # CPU the server spent per request: steadier than requests/s when other processes compete for the cores
    result["server_cpu_us_per_request"] = round(1e6 * cpu / max(result["requests"], 1), 1)
    result["server_cpu_utilisation"] = round(cpu / result["duration_s"], 3)
    server.rss_samples[f"after_{name}"] = memory_kib(server.process.pid)
    return result


def time_logins(server: Server, email: str, count: int) -> dict[str, Any]:
    """Time ``count`` sequential logins (after two untimed ones) on one keep-alive connection."""
    body = {"email": email, "password": PASSWORD}
    samples: list[float] = []
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for i in range(count + 2):
            start = time.perf_counter()
            response = client.post("/api/v1/auth/login", json=body)
            elapsed = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"login answered {response.status_code}: {response.text}")
            if i >= 2:
                samples.append(elapsed)
    server.rss_samples["after_login"] = memory_kib(server.process.pid)
    return {"count": count, **summarize(samples)}


def argon2_cost(count: int) -> dict[str, Any]:
    """Time ``count`` argon2id verifications in this process with the server's own hasher and parameters."""
    sys.path.insert(0, str(REPO / "src"))
    from mercato.identity import passwords  # the hasher the server uses (m=19 MiB, t=2, p=1)

    hasher = passwords._hasher
    password_hash = hasher.hash(PASSWORD)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        hasher.verify(password_hash, PASSWORD)
        samples.append((time.perf_counter() - start) * 1000)
    return {
        "count": count,
        "params": {
            "time_cost": hasher.time_cost,
            "memory_kib": hasher.memory_cost,
            "parallelism": hasher.parallelism,
        },
        **summarize(samples),
    }


def summarize(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean/min/max (ms) of ``samples``; p95 and p99 are nearest-rank percentiles."""
    ordered = sorted(samples)
    p95 = ordered[max(0, -(-len(ordered) * 95 // 100) - 1)]
    p99 = ordered[max(0, -(-len(ordered) * 99 // 100) - 1)]
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(p95, 2),
        "p99_ms": round(p99, 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "min_ms": round(ordered[0], 2),
        "max_ms": round(ordered[-1], 2),
    }


def cache_counters(server: Server) -> dict[str, float]:
    """The server's session/user cache hit and miss counters from ``/metrics``."""
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    counters: dict[str, float] = {}
    for match in re.finditer(r'^mercato_cache_(hits|misses)_total\{cache="(\w+)"\} ([0-9.e+]+)$', text, re.M):
        counters[f"{match[2]}_{match[1]}"] = float(match[3])
    return counters


def git(*args: str) -> bytes:
    """The output of ``git <args>`` in the repository, or nothing when git or the repository is missing."""
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return b""


def machine() -> dict[str, Any]:
    """CPU, core count, OS, Python and wrk versions, and the git commit measured."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10, check=False)
        first = (out.stdout or out.stderr or "\n").splitlines()[0]
        wrk_version = first.split(" Copyright")[0].strip()
    commit = git("rev-parse", "--short", "HEAD").decode().strip()
    diff = git("diff", "HEAD", "--", "src")
    untracked = git("ls-files", "--others", "--exclude-standard", "--", "src")
    dirty = bool(diff or untracked)
    return {
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "wrk": wrk_version,
        "git_commit": commit,
        "src_dirty": dirty,
        # identifies the uncommitted state measured (tracked changes and the names of new files under src/)
        "src_diff_sha256": hashlib.sha256(diff + untracked).hexdigest()[:16] if dirty else None,
    }


def print_report(report: dict[str, Any]) -> None:
    """The human-readable table."""
    m = report["machine"]
    cfg = report["config"]
    print()
    print(f"Mercato foundation benchmark — {report['started_at']}")
    print(
        f"  {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['wrk']}, commit {m['git_commit']}"
        f"{' + uncommitted src changes ' + m['src_diff_sha256'] if m['src_dirty'] else ''}"
    )
    print(f"  load average at start {m['load_average_at_start']}, at end {m.get('load_average_at_end')}")
    print(f"  one server process, SQLite; wrk -t{cfg['threads']} -c{cfg['connections']} -d{cfg['duration_s']}s")
    print()
    print(
        f"  {'endpoint':<24}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>7}"
        f"{'server CPU':>12}{'µs CPU/req':>12}"
    )
    for name, path in (("health", "GET /health"), ("me", "GET /api/v1/auth/me")):
        r = report["results"].get(name)
        if r:
            errors = sum(r["errors"].values())
            print(
                f"  {path:<24}{r['rps']:>8.0f}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                f"{r['max_ms']:>9.1f}{errors:>7}{r['server_cpu_utilisation']:>12.0%}"
                f"{r['server_cpu_us_per_request']:>12.0f}"
            )
    login = report["results"].get("login")
    if login:
        print(
            f"  {'POST /api/v1/auth/login':<24}{'':>8}{login['p50_ms']:>9.1f}{login['p95_ms']:>9.1f}"
            f"{'':>9}{login['max_ms']:>9.1f}   ({login['count']} sequential)"
        )
        a = report["results"]["argon2_verify"]
        print(
            f"  argon2id verify (m={a['params']['memory_kib'] // 1024} MiB, t={a['params']['time_cost']}, "
            f"p={a['params']['parallelism']}): p50 {a['p50_ms']:.1f} ms in-process, "
            f"{100 * a['p50_ms'] / login['p50_ms']:.0f} % of a login's p50"
        )
    ratio = report.get("me_to_health_ratio")
    if ratio is not None:
        verdict = "MEETS" if ratio >= TARGET_RATIO else "MISSES"
        print(f"\n  /auth/me ÷ /health requests/s = {ratio:.1%}  → {verdict} the ≥ {TARGET_RATIO:.0%} target")
        print(
            f"  CPU-normalised ratio (server µs per /health request ÷ per /auth/me request) = "
            f"{report['me_to_health_cpu_ratio']:.1%}: the ratio if the server had a core to itself"
        )
    if report.get("cache"):
        print(f"  session cache counters: {report['cache']}")
    mem = report["memory"]
    print(
        f"  server memory: peak {mem['peak_rss_kib'] / 1024:.0f} MiB (VmHWM), "
        f"now {mem['rss_kib'] / 1024:.0f} MiB (VmRSS); log lines written: {report['server_log_lines']}"
    )
    if report.get("saved_to"):
        print(f"\n  saved {report['saved_to']}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up the data dir and server, run the selected benchmarks, always stop the server."""
    if {"health", "me"} & set(args.only) and shutil.which("wrk") is None:
        sys.exit(WRK_MISSING)
    report: dict[str, Any] = {
        "benchmark": "foundation",
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "config": {
            "duration_s": args.duration,
            "connections": args.connections,
            "threads": args.threads,
            "warmup_s": args.warmup,
            "logins": args.logins,
            "only": args.only,
            "server": "mercato serve --workers 1, SQLite, MERCATO_ENV=production, MERCATO_RATE_LIMITS=false",
        },
        "results": {},
    }
    load = report["machine"]["load_average_at_start"][0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(
            f"warning: the 1-minute load average is {load} on {os.cpu_count()} cores; "
            "other processes will skew the figures",
            flush=True,
        )
    data_dir = Path(tempfile.mkdtemp(prefix="mercato-bench-"))
    server: Server | None = None
    try:
        env = server_env(data_dir)
        print(f"data dir {data_dir}; migrating ...", flush=True)
        migrate(env, data_dir)
        server = start_server(env, data_dir, data_dir / "server.log")
        print(f"server pid {server.process.pid} on {server.base_url}", flush=True)
        server.rss_samples["idle"] = memory_kib(server.process.pid)
        token, email = register(server)
        if "health" in args.only:
            report["results"]["health"] = load_test(server, "health", "/health", {}, args)
        if "me" in args.only:
            report["results"]["me"] = load_test(
                server, "me", "/api/v1/auth/me", {"Authorization": f"Bearer {token}"}, args
            )
            report["cache"] = cache_counters(server)
        if "login" in args.only:
            print(f"  login: {args.logins} sequential logins ...", flush=True)
            report["results"]["login"] = time_logins(server, email, args.logins)
            report["results"]["argon2_verify"] = argon2_cost(args.logins)
        report["memory"] = memory_kib(server.process.pid)
        report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        report["memory"]["samples"] = server.rss_samples
    finally:
        if server is not None:
            stop_server(server)
            log = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
            report["server_log_lines"] = len(log.splitlines())
            report["server_log_errors"] = [line for line in log.splitlines() if '"level": "error"' in line][:5]
        if args.keep:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    health, me = report["results"].get("health"), report["results"].get("me")
    if health and me:
        report["me_to_health_ratio"] = round(me["rps"] / health["rps"], 4)
        report["meets_target"] = report["me_to_health_ratio"] >= TARGET_RATIO
        # the same ratio from CPU cost per request: what it would be if the server had a core to itself
        report["me_to_health_cpu_ratio"] = round(
            health["server_cpu_us_per_request"] / me["server_cpu_us_per_request"], 4
        )
    return report


def save_report(report: dict[str, Any], name: str) -> None:
    """Write ``report`` to ``bench/results/<name>-<started_at>.json`` and note the path in ``report["saved_to"]``."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = report["started_at"].replace("-", "").replace(":", "")
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    report["saved_to"] = str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run, print the table, save the JSON."""
    args = parse_args(argv)
    report = run(args)
    if not args.no_save:
        save_report(report, "foundation")
    print_report(report)
    if args.check and report.get("meets_target") is False:
        sys.exit(1)


if __name__ == "__main__":
    main()
