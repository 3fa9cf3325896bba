"""Invariant checks run by ``mercato check``. Each domain registers functions that return the violations they
find (human-readable strings); an empty list means the data is consistent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

Check = Callable[[AsyncSession], Awaitable[list[str]]]
_CHECKS: dict[str, Check] = {}


def register(name: str) -> Callable[[Check], Check]:
    """Register an invariant check under ``name``."""

    def add(fn: Check) -> Check:
        _CHECKS[name] = fn
        return fn

    return add


def all_checks() -> dict[str, Check]:
    """Every registered check (importing the domain modules registers theirs)."""
    from mercato.identity import checks as _identity  # noqa: F401
    from mercato.payments import checks as _payments  # noqa: F401

    return dict(_CHECKS)
