"""One thread hop per SQLite statement instead of four, and none for ``BEGIN``.

aiosqlite runs each call on its connection's own thread; SQLAlchemy's aiosqlite adapter makes four such calls per
``SELECT`` (open a cursor, execute, fetch all rows, close the cursor) and three per ``INSERT``/``UPDATE``. Every
call is a hand-off to that thread and back through the event loop's self-pipe, which costs far more CPU than the
statement itself (measured with ``bench/profile_selling.py``: about 300 µs of CPU for a ``SELECT 1`` through an
``AsyncSession``, 31 µs for one aiosqlite call). :class:`OneHopConnection` runs the whole statement (cursor,
execute, fetch, close) as one function on that thread and keeps the rows, description, rowcount and lastrowid for
SQLAlchemy, exactly what the stock adapter buffers too (it is not a server-side cursor either).

A transaction's ``BEGIN`` (or ``BEGIN IMMEDIATE``) is not a hop of its own either: :meth:`OneHopConnection.begin`
keeps it, and it is sent on the thread just before the transaction's first statement, in that statement's hop. A
transaction that ends without a statement never began in SQLite, so its ``COMMIT``/``ROLLBACK`` is no hop either.
The pending ``BEGIN`` is kept on the ``aiosqlite.Connection`` (a thread object with a ``__dict__``; the adapter
has fixed slots), and cleared on the thread once SQLite has accepted it.

:func:`one_hop` switches a freshly opened pool connection to it (``Database`` does so in its ``connect`` event).
It relies on two attributes that SQLAlchemy's own adapter uses as well: ``aiosqlite.Connection._execute`` (queue a
function for the connection's thread) and ``aiosqlite.Connection._conn`` (the ``sqlite3.Connection``); the versions
are pinned in ``requirements.lock`` and the whole test suite runs through this path.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection, AsyncAdapt_aiosqlite_cursor
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

#: Attribute of the ``aiosqlite.Connection`` holding the ``BEGIN`` to send before the next statement.
_PENDING_BEGIN = "mercato_pending_begin"


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose ``execute``/``executemany`` each make a single call on aiosqlite's thread."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    _awaitable_cursor_close = False

    def __init__(self, adapt_connection: Any) -> None:  # no cursor is opened ahead of the statement
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._run(operation, parameters, many=False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        try:
            return await_(self._run(operation, seq_of_parameters, many=True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        connection = self._connection
        sqlite_connection = connection._conn  # raises ValueError("no active connection") once closed
        begin: str | None = getattr(connection, _PENDING_BEGIN, None)

        def statement() -> tuple[Any, list[Any] | None, int, int | None]:
            if begin is not None:
                sqlite_connection.execute(begin)  # a failure (database is locked) leaves it pending: rolled back
                setattr(connection, _PENDING_BEGIN, None)
            cursor = sqlite_connection.cursor()
            try:
                if many:
                    cursor.executemany(operation, parameters)
                elif parameters is None:
                    cursor.execute(operation)
                else:
                    cursor.execute(operation, parameters)
                description = cursor.description
                rows = cursor.fetchall() if description else None
                return description, rows, cursor.rowcount, cursor.lastrowid
            finally:
                cursor.close()

        async with self._adapt_connection._execute_mutex:
            description, rows, rowcount, lastrowid = await self._connection._execute(statement)
        self._description, self._rowcount, self._lastrowid = description, rowcount, lastrowid
        self._rows = collections.deque(rows) if rows is not None else collections.deque()


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection adapter with :class:`OneHopCursor` as its (non server-side) cursor, and
    ``BEGIN`` sent with the transaction's first statement."""

    __slots__ = ()
    _cursor_cls = OneHopCursor

    def begin(self, sql: str) -> None:
        """Start a transaction with ``sql`` (``BEGIN`` or ``BEGIN IMMEDIATE``), sent on the connection's thread
        just before the next statement, in the same hop."""
        setattr(self._connection, _PENDING_BEGIN, sql)

    def commit(self) -> None:
        """Commit; a transaction whose ``BEGIN`` was never sent (no statement ran) has nothing to commit."""
        if not self._drop_pending_begin():
            super().commit()

    def rollback(self) -> None:
        """Roll back; a transaction whose ``BEGIN`` was never sent (or failed) has nothing to roll back."""
        if not self._drop_pending_begin():
            super().rollback()

    def _drop_pending_begin(self) -> bool:
        if getattr(self._connection, _PENDING_BEGIN, None) is None:
            return False
        setattr(self._connection, _PENDING_BEGIN, None)
        return True


def one_hop(dbapi_connection: Any) -> None:
    """Switch an open ``AsyncAdapt_aiosqlite_connection`` (a pool connection) to :class:`OneHopConnection`; the
    layout is the same (no new slots), only the cursor class differs."""
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = OneHopConnection
