"""One thread hop per SQLite statement instead of four.

aiosqlite runs each call on its connection's own thread; SQLAlchemy's aiosqlite adapter makes four such calls per
``SELECT`` (open a cursor, execute, fetch all rows, close the cursor) and three per ``INSERT``/``UPDATE``. Every
call is a hand-off to that thread and back through the event loop's self-pipe, which costs far more CPU than the
statement itself (measured with ``bench/profile_selling.py``: about 300 µs of CPU for a ``SELECT 1`` through an
``AsyncSession``, 31 µs for one aiosqlite call). :class:`OneHopConnection` runs the whole statement (cursor,
execute, fetch, close) as one function on that thread and keeps the rows, description, rowcount and lastrowid for
SQLAlchemy, exactly what the stock adapter buffers too (it is not a server-side cursor either).

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
        sqlite_connection = self._connection._conn  # raises ValueError("no active connection") once closed

        def statement() -> tuple[Any, list[Any] | None, int, int | None]:
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
    """SQLAlchemy's aiosqlite connection adapter with :class:`OneHopCursor` as its (non server-side) cursor."""

    __slots__ = ()
    _cursor_cls = OneHopCursor


def one_hop(dbapi_connection: Any) -> None:
    """Switch an open ``AsyncAdapt_aiosqlite_connection`` (a pool connection) to :class:`OneHopConnection`; the
    layout is the same (no new slots), only the cursor class differs."""
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = OneHopConnection
