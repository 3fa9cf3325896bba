"""The real thing: ``mercato serve`` as a separate process on a free port (temporary SQLite file and data
directory), spoken to over real HTTP, then stopped with SIGTERM."""

from __future__ import annotations

import email
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.policy import default as default_policy
from pathlib import Path

import httpx
import pytest

from tests.conftest import STRONG_PASSWORD
from tests.integration.conftest import free_port, mercato_env

MERCATO = Path(sys.executable).with_name("mercato")
START_TIMEOUT_S = 60  # importing and migrating takes several seconds on a busy machine
STOP_TIMEOUT_S = 15


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path
    data_dir: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited with {server.process.returncode}:\n{server.log_text()}")
        try:
            if httpx.get(server.base_url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server did not answer /health within {START_TIMEOUT_S} s:\n{server.log_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    env = mercato_env(
        database_url=f"sqlite+aiosqlite:///{root}/var/mercato.db",
        data_dir=str(root / "var"),
        secret_key="real-server-test-secret-0123456789abcdef",
    )
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(MERCATO), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Server(f"http://127.0.0.1:{port}", process, log, root / "var")
    try:
        _wait_until_healthy(running)
        yield running
    finally:
        _stop(process)
    # Uvicorn shuts down gracefully, then re-raises SIGTERM so the parent sees why it stopped.
    assert process.returncode in (0, -signal.SIGTERM), running.log_text()
    assert "Application shutdown complete." in running.log_text()
    assert "Traceback" not in running.log_text()


def test_health_docs_and_openapi(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        health = http.get("/health")
        docs = http.get("/docs")
        schema = http.get("/openapi.json")

    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in docs.text
    assert schema.status_code == 200
    assert "/api/v1/auth/register" in schema.json()["paths"]


def test_register_then_me_with_the_bearer_token(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        registered = http.post("/api/v1/auth/register", json={"email": "Real@Example.com", "password": STRONG_PASSWORD})
        assert registered.status_code == 201, registered.text
        token = registered.json()["access_token"]

        me = http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    anonymous = httpx.get(server.base_url + "/api/v1/auth/me", timeout=30)  # no cookies, no token

    assert me.status_code == 200
    assert me.json()["email"] == "real@example.com"
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"


def test_the_in_process_job_runner_sends_the_verification_email(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        registered = http.post("/api/v1/auth/register", json={"email": "mail@example.com", "password": STRONG_PASSWORD})
    assert registered.status_code == 201, registered.text

    outbox = server.data_dir / "outbox"
    deadline = time.monotonic() + START_TIMEOUT_S
    subjects: list[str] = []
    while time.monotonic() < deadline:
        messages = [
            email.message_from_bytes(p.read_bytes(), policy=default_policy)
            for p in (sorted(outbox.glob("*.eml")) if outbox.exists() else [])
        ]
        subjects = [str(m["Subject"]) for m in messages if m["To"] == "mail@example.com"]
        if subjects:
            break
        time.sleep(0.1)
    assert subjects == ["Confirm your email address"], server.log_text()


def test_ready(server: Server) -> None:
    ready = httpx.get(server.base_url + "/ready", timeout=10)

    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok"}}
