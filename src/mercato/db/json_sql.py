"""JSON built by the database, the same on SQLite and PostgreSQL: :class:`JsonSql`.

A page of products is serialised by the database in the statement that reads it (``catalog.repository``): the
event loop then only joins the rows' text, instead of turning every column into Python objects and back into
JSON, and the work runs on the database's side (on SQLite, aiosqlite's thread, without the GIL). Values come out
as Mercato's response models serialise them (pydantic): UUIDs in the 8-4-4-4-12 form, money as a string with two
decimals, instants as RFC 3339 in UTC with a ``Z`` and microseconds only when there are some.

SQLite notes: a JSON value keeps its JSON type only within one expression, so a JSON value read from a subquery
is wrapped in ``json()`` again; SQLite before 3.44 has no ``ORDER BY`` inside an aggregate, so an ordered array
aggregates an ordered subquery (which SQLite does not flatten into an aggregate query, and reads in order).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Numeric, Text, case, cast, extract, func, literal_column, null, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.sql.elements import ColumnElement


def sql_constant(value: str | int) -> ColumnElement[Any]:
    """``value`` written into the statement itself rather than bound: a page's statement has hundreds of such
    constants (keys, offsets, separators), and binding each one on every execution costs more than the query.

    Raises:
        ValueError: a string with a quote or a backslash (constants are code, never user input).
    """
    if isinstance(value, int):
        return literal_column(str(int(value)))
    if "'" in value or "\\" in value:
        raise ValueError(f"not a plain SQL constant: {value!r}")
    return literal_column(f"'{value}'")


class JsonSql:
    """SQL expressions producing JSON text for one dialect (``sqlite`` or ``postgresql``)."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"

    def object(self, *pairs: tuple[str, Any]) -> ColumnElement[Any]:
        """A JSON object of ``(key, value expression)`` pairs, keys in the given order."""
        arguments: list[Any] = []
        for key, value in pairs:
            arguments.extend((sql_constant(key), value))
        return func.json_object(*arguments) if self.sqlite else func.json_build_object(*arguments)

    def text(self, value: Any) -> ColumnElement[str]:
        """``value`` (a JSON expression) as text, the form the driver hands to Python unparsed."""
        return cast(value, Text)

    def embedded(self, value: Any) -> ColumnElement[Any]:
        """A JSON value that comes from a column or a subquery, embedded as JSON (not as a string)."""
        return func.json(value) if self.sqlite else value

    def boolean(self, condition: ColumnElement[bool]) -> ColumnElement[Any]:
        """``true``/``false`` for ``condition``."""
        if self.sqlite:
            return func.json(case((condition, sql_constant("true")), else_=sql_constant("false")))
        return condition

    def uuid(self, value: Any) -> ColumnElement[Any]:
        """A UUID column as its 8-4-4-4-12 string (null stays null). SQLite stores 32 hex digits."""
        if not self.sqlite:
            return cast(value, Text)
        spans = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
        parts = [func.substr(value, sql_constant(start), sql_constant(length)) for start, length in spans]
        joined: ColumnElement[Any] = parts[0]
        for part in parts[1:]:
            joined = joined.concat(sql_constant("-")).concat(part)
        return joined

    def money(self, cents: Any) -> ColumnElement[Any]:
        """An integer number of cents as a decimal string with two decimals (``-2000`` → ``"-20.00"``; null stays
        null)."""
        if self.sqlite:
            hundred = sql_constant(100)
            sign = case((cents < sql_constant(0), sql_constant("-")), else_=sql_constant(""))
            shown = func.printf(sql_constant("%s%d.%02d"), sign, func.abs(cents) / hundred, func.abs(cents) % hundred)
            return case((cents.is_(None), null()), else_=shown)
        return cast(cast(cast(cents, Numeric(20, 2)) / sql_constant(100), Numeric(20, 2)), Text)

    def decimal2(self, value: Any) -> ColumnElement[Any]:
        """A ``NUMERIC(p, 2)`` column (a float on SQLite) as a string with two decimals."""
        return func.printf(sql_constant("%.2f"), value) if self.sqlite else cast(value, Text)

    def instant(self, value: Any) -> ColumnElement[Any]:
        """A UTC timestamp as RFC 3339 with ``Z``: ``2026-11-22T08:00:00Z``, ``...T08:00:00.400000Z``."""
        if self.sqlite:  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC
            c = sql_constant
            seconds = func.substr(value, c(1), c(10)).concat(c("T")).concat(func.substr(value, c(12), c(8)))
            digits = func.substr(value, c(20))
            fraction = case((digits.in_([c(""), c(".000000")]), c("")), else_=digits)
            return case((value.is_(None), null()), else_=seconds.concat(fraction).concat(c("Z")))
        c = sql_constant
        utc = func.timezone(c("UTC"), value)
        whole = extract("microseconds", utc) % c(1000000) == c(0)
        micro = case((whole, c("")), else_=func.to_char(utc, c(".US")))
        return func.to_char(utc, c('YYYY-MM-DD"T"HH24:MI:SS')).concat(micro).concat(c("Z"))

    def greatest(self, *values: Any) -> ColumnElement[Any]:
        """The largest of ``values`` (SQLite's scalar ``max``, PostgreSQL's ``greatest``)."""
        return func.max(*values) if self.sqlite else func.greatest(*values)

    def array(
        self, element: ColumnElement[Any], where: ColumnElement[bool], order: tuple[Any, ...], outer: Any
    ) -> ColumnElement[Any]:
        """A scalar subquery: the JSON array of ``element`` over the rows matching ``where``, in ``order`` (``[]``
        when there is none).

        Args:
            element: a JSON expression of one row.
            where: which rows; it refers to ``outer``, the enclosing query's table it is correlated to.
            order: the ORDER BY of the rows.
            outer: the enclosing query's table (or ORM entity).
        """
        if self.sqlite:
            rows = select(element.label("element")).where(where).order_by(*order).correlate(outer).subquery()
            return self.embedded(select(func.json_group_array(func.json(rows.c.element))).scalar_subquery())
        aggregate = func.coalesce(func.json_agg(aggregate_order_by(element, *order)), literal_column("'[]'::json"))
        return select(aggregate).where(where).correlate(outer).scalar_subquery()
