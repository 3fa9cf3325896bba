#!/usr/bin/env python3
"""One command per chore, needing nothing but Python ≥ 3.11 on the machine.

Every command first makes sure ``.venv`` exists and matches ``requirements.lock`` (installing it with hash
checking when the lock changed), then runs inside it:

    python3 scripts/dev.py serve         # migrate, load the demo store, serve http://127.0.0.1:8000 (/docs)
    python3 scripts/dev.py test          # the main test suite
    python3 scripts/dev.py test-slow     # slow suites (crash, load, fuzz)
    python3 scripts/dev.py lint          # ruff + mypy
    python3 scripts/dev.py services      # fail unless the test PostgreSQL / Redis URLs answer
    python3 scripts/dev.py lock          # re-resolve requirements.lock from pyproject.toml
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
LOCK = ROOT / "requirements.lock"
STAMP = VENV / ".mercato-lock"


def _digest() -> str:
    return hashlib.sha256(LOCK.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv() -> None:
    """Create ``.venv`` and install the locked dependencies and Mercato itself when anything changed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may be started by an older python3
        sys.exit("Mercato needs Python 3.11 or newer")
    if not PY.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _digest():
        return
    print("installing locked dependencies (first run takes a minute) ...", flush=True)
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check", "-q", "install"]
    subprocess.run([*pip, "--require-hashes", "-r", str(LOCK)], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    STAMP.write_text(_digest())


def _pin_coverage_extra() -> None:
    """Write the coverage pin as ``coverage[toml]==...`` (uv writes ``coverage==...``): pytest-cov asks for
    ``coverage[toml]``, and pip's hash-checking mode refuses a requirement with an extra that the lock does not
    pin as such."""
    text = LOCK.read_text()
    LOCK.write_text(re.sub(r"^coverage==", "coverage[toml]==", text, flags=re.MULTILINE))


def run(*args: str, env: dict[str, str] | None = None) -> int:
    return subprocess.run(list(args), cwd=ROOT, env={**os.environ, **(env or {})}).returncode


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command in {"help", "-h", "--help"}:
        print(__doc__)
        return 0
    ensure_venv()
    pytest = [str(PY), "-m", "pytest"]
    if command == "serve":
        return run(str(BIN / "mercato"), "serve", "--demo", *rest)
    if command == "test":
        return run(*pytest, "-n", "auto", "-m", "not slow", *rest)
    if command == "test-slow":
        code = run(*pytest, "-m", "slow", *rest)
        return 0 if code == 5 else code  # 5: no slow test collected yet
    if command == "lint":
        return (
            run(str(BIN / "ruff"), "check", "src", "tests", "bench", "scripts")
            or run(str(BIN / "ruff"), "format", "--check", "src", "tests", "bench", "scripts")
            or run(str(BIN / "mypy"))
        )
    if command == "services":
        return run(str(PY), str(ROOT / "scripts" / "check_services.py"))
    if command == "lock":
        run(str(PY), "-m", "pip", "-q", "install", "uv")
        code = run(
            str(BIN / "uv"),
            "pip",
            "compile",
            "pyproject.toml",
            "--extra",
            "dev",
            "--generate-hashes",
            "--python-version",
            "3.11",
            "-o",
            "requirements.lock",
            *rest,
        )
        if code == 0:
            _pin_coverage_extra()
        return code
    if command == "mercato":
        return run(str(BIN / "mercato"), *rest)
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
