"""Query helpers shared by every repository."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.engine import Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T", covariant=True)


@dataclass(frozen=True)
class Paged(Generic[T]):
    """One page of rows plus the total number of rows matching the query."""

    items: Sequence[T]
    total: int
    page: int
    limit: int


async def paged(session: AsyncSession, query: Select[Any], *, page: int, limit: int) -> Paged[Any]:
    """Run ``query`` for page ``page`` (1-based) of ``limit`` rows, and count all matching rows."""
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    items = (await session.execute(query.limit(limit).offset((page - 1) * limit))).scalars().all()
    return Paged(items, int(total or 0), page, limit)


async def add_unique(session: AsyncSession, row: Any) -> bool:
    """Insert ``row`` (and what it cascades to) in a savepoint.

    Returns:
        False when a unique constraint refused it: a concurrent request inserted the same value after this one
        checked (PostgreSQL; SQLite's single writer cannot interleave). Only the savepoint is rolled back, ``row``
        is left out of the session, and the transaction can go on (or retry).
    """
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        return False
    return True


async def run_core(session: AsyncSession, statement: Any, params: dict[str, Any] | list[dict[str, Any]]) -> Result[Any]:
    """Run a Core statement (columns, not ORM objects) in the session's transaction, past the ORM's execution
    layer: no autoflush (changes staged in the session and not flushed yet are not seen) and no ORM result
    processing. The hot paths use it (a cart add, sellable units): the ORM layer costs more CPU than the
    statement (bench/README.md "Selling benchmark"). A list of ``params`` runs the statement once per item
    (``executemany``).
    """
    connection = await session.connection()
    result: Result[Any] = await connection.execute(statement, params)
    return result
