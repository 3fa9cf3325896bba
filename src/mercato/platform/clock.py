"""The one place that reads the wall clock and makes ids, so tests can fix both.

Business rules take ``now`` from :func:`now` (timezone-aware UTC) and new ids from :func:`new_id`
(UUID version 7, time-ordered, RFC 9562).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import uuid_utils

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def now() -> datetime:
    """Return the current time as an aware UTC ``datetime``."""
    return _now()


def set_clock(clock: Callable[[], datetime] | None) -> None:
    """Replace the clock (tests); ``None`` restores the real one."""
    global _now
    _now = clock or (lambda: datetime.now(UTC))


def new_id() -> uuid.UUID:
    """Return a new time-ordered UUIDv7 (RFC 9562 §5.7)."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)
