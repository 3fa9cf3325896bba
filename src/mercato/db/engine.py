"""Engine and session factory for SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQLite is configured for durability and one writer at a time (ADR 0004): WAL, ``synchronous=FULL``,
``foreign_keys=ON``, ``busy_timeout=10000`` ms, and write transactions opened with ``BEGIN IMMEDIATE`` so two
writers never deadlock on a lock upgrade. Read sessions start a plain deferred ``BEGIN``. A writer that waits
longer than the busy timeout fails with "database is locked", which the API answers with 503 and
``Retry-After`` (``web/problems.py``). Statements run with one hand-off to aiosqlite's thread each
(``db/sqlite_cursor.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from mercato.db.sqlite_cursor import one_hop

log = structlog.get_logger("mercato.db")

AfterCommit = Callable[[], Awaitable[None]]
_WRITE = "mercato_write"


class Database:
    """Owns the engine; hands out sessions that are one transaction each.

    Args:
        url: SQLAlchemy URL, ``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://...``.
        pool_size: connections kept open (PostgreSQL; as many again are opened under load).
        sqlite_readers: read connections on SQLite, each with its own thread and page cache. More threads than
            cores serve no more reads (they take turns at the GIL) and hold more memory: the catalog benchmark's
            peak RSS fell from 189 to 145 MiB going from 20 readers to 4 (bench/README.md).
        busy_timeout_ms: how long a SQLite statement waits for another writer's lock before it fails with
            "database is locked" (answered 503, see ``web/problems.py``).
    """

    def __init__(
        self, url: str, *, pool_size: int = 10, sqlite_readers: int = 4, busy_timeout_ms: int = 10_000
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["poolclass"] = AsyncAdaptedQueuePool
            kwargs["pool_size"] = sqlite_readers
            kwargs["max_overflow"] = 0
            kwargs["pool_timeout"] = busy_timeout_ms / 1000
            kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000}
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
            kwargs["pool_pre_ping"] = True
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self.write_engine = self.engine
        if self.is_sqlite:
            _configure_sqlite(self.engine, busy_timeout_ms)
            # SQLite lets one transaction write at a time. Writers of this process queue for a single writer
            # connection in the pool, first come first served, instead of in SQLite's busy handler, which polls
            # with growing sleeps and lets newcomers overtake (seconds-long tails under load). A writer waits at
            # most the busy timeout (then 503). Readers keep their own pool and never wait for writers (WAL).
            self.write_engine = create_async_engine(url, **(kwargs | {"pool_size": 1}))
            _configure_sqlite(self.write_engine, busy_timeout_ms)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=True)
        self.write_sessionmaker = async_sessionmaker(
            self.write_engine.execution_options(**{_WRITE: True}), expire_on_commit=False, autoflush=True
        )

    @asynccontextmanager
    async def session(self, *, write: bool) -> AsyncIterator[AsyncSession]:
        """Yield a session whose work commits when the block exits normally and rolls back otherwise.

        ``write=True`` opens the transaction with ``BEGIN IMMEDIATE`` on SQLite. Callables appended to
        ``session.info["after_commit"]`` run after a successful commit (cache invalidation, job wake-ups).
        """
        factory = self.write_sessionmaker if write else self.sessionmaker
        async with factory() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
            await run_after_commit(session)

    async def ping(self) -> None:
        """Run ``SELECT 1``; raises the driver's error when the database does not answer."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def refresh_statistics(self) -> None:
        """Bring the query planner's statistics up to date after a bulk load (seeding, an import): PostgreSQL
        ``ANALYZE``. Until its autovacuum gets there, PostgreSQL plans for the tables as they were before (empty,
        say) and may walk every product for a page of 20 (measured: a search page took 183 ms instead of 0.8 ms
        right after seeding 10,000 products). SQLite keeps no statistics unless asked (``ANALYZE``), and the
        catalog's queries are written for its planner's fixed estimates, so there is nothing to do.

        A failure (a timeout, a lost connection) is logged and not raised: the load it follows has committed,
        and autovacuum will analyse the tables later anyway."""
        if self.is_sqlite:
            return
        try:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("ANALYZE")
                await conn.commit()
        except Exception:
            log.exception("analyze_failed")

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run ``callback`` once the session's transaction has committed (never on rollback)."""
    session.info.setdefault("after_commit", []).append(callback)


async def run_after_commit(session: AsyncSession) -> None:
    """Run the session's after-commit callbacks in order, once its transaction has committed. A callback that
    fails (Redis down during a cache invalidation, say) is logged at error level and the others still run: the
    change is committed, so the request that made it must not answer 500 (its client would retry a done
    change)."""
    for callback in session.info.pop("after_commit", []):
        try:
            await callback()
        except Exception:
            log.exception("after_commit_failed", callback=getattr(callback, "__qualname__", repr(callback)))


def _lower(value: Any) -> Any:
    """SQL ``lower(value)`` with Unicode case folding as PostgreSQL does it (NULL and non-text pass through)."""
    return value.lower() if isinstance(value, str) else value


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        one_hop(dbapi_connection)  # one hand-off to aiosqlite's thread per statement (see db/sqlite_cursor.py)
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        # SQLite's own lower() folds ASCII letters only ("Écharpe" stays "Écharpe"), PostgreSQL's folds every
        # letter: with Python's str.lower in its place, case-insensitive filters (q, brand, email) match the same
        # rows on both databases. No SQLite index is built on lower(), so none goes stale.
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA foreign_keys=ON",
            f"PRAGMA busy_timeout={int(busy_timeout_ms)}",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        # sent with the transaction's first statement, in its hop to aiosqlite's thread (db/sqlite_cursor.py)
        conn.connection.dbapi_connection.begin("BEGIN IMMEDIATE" if write else "BEGIN")  # type: ignore[union-attr]
