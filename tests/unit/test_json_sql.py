"""``db.json_sql``: JSON built by SQLite, in the formats the response models use (PostgreSQL's side is checked
end to end by tests/api/test_catalog.py::test_listed_products_are_shaped_like_the_product_itself)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from sqlalchemy import BigInteger, DateTime, Numeric, String, column, select, table
from sqlalchemy.dialects import sqlite

from mercato.db.json_sql import JsonSql, sql_constant

ROWS = table(
    "t", column("cents", BigInteger), column("at", DateTime), column("id", String), column("rate", Numeric(3, 2))
)


def rendered(rows: list[tuple[object, ...]]) -> list[dict[str, object]]:
    j = JsonSql("sqlite")
    query = select(
        j.object(
            ("money", j.money(ROWS.c.cents)),
            ("at", j.instant(ROWS.c.at)),
            ("id", j.uuid(ROWS.c.id)),
            ("rate", j.decimal2(ROWS.c.rate)),
            ("positive", j.boolean(ROWS.c.cents > sql_constant(0))),
        )
    )
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (cents BIGINT, at DATETIME, id CHAR(32), rate NUMERIC(3, 2))")
    connection.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    sql = str(query.compile(dialect=sqlite.dialect()))
    return [json.loads(text) for (text,) in connection.execute(sql)]


def test_sqlite_values_come_out_as_the_api_shows_them() -> None:
    assert rendered(
        [
            (-2000, "2026-01-02 03:04:05.000000", "0123456789abcdef0123456789abcdef", 4.5),
            (1999, "2026-01-02 03:04:05.400000", None, 0),
            (None, "2026-01-02 03:04:05", None, 3.25),
            (5, None, None, 5),
        ]
    ) == [
        {
            "money": "-20.00",
            "at": "2026-01-02T03:04:05Z",
            "id": "01234567-89ab-cdef-0123-456789abcdef",
            "rate": "4.50",
            "positive": False,
        },
        {"money": "19.99", "at": "2026-01-02T03:04:05.400000Z", "id": None, "rate": "0.00", "positive": True},
        {"money": None, "at": "2026-01-02T03:04:05Z", "id": None, "rate": "3.25", "positive": False},
        {"money": "0.05", "at": None, "id": None, "rate": "5.00", "positive": True},
    ]


@pytest.mark.parametrize("value", ["it's", "back\\slash"])
def test_constants_never_hold_quotes(value: str) -> None:
    with pytest.raises(ValueError, match="not a plain SQL constant"):
        sql_constant(value)
