"""Helpers for the integration suites: a settable clock, free TCP ports, and an environment for child
processes (and in-process CLI runs) that holds only the ``MERCATO_*`` variables a test chooses."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from mercato.platform import clock


class FixedClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current

    def set(self, moment: datetime) -> None:
        self.current = moment


@pytest.fixture
def fixed_clock() -> Iterator[FixedClock]:
    """Fix ``mercato.platform.clock.now()`` at 2030-01-01 12:00 UTC; the real clock is restored afterwards."""
    fake = FixedClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))
    clock.set_clock(fake.now)
    try:
        yield fake
    finally:
        clock.set_clock(None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def mercato_env(**values: str) -> dict[str, str]:
    """This process's environment without any ``MERCATO_*`` variable, plus ``values`` (``database_url=...``
    becomes ``MERCATO_DATABASE_URL``)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MERCATO_")}
    env.update({f"MERCATO_{key.upper()}": value for key, value in values.items()})
    return env
