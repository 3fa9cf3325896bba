"""Migrations: a fresh database upgraded to head matches the models exactly, on SQLite and (when configured)
PostgreSQL; revision files and constraint names follow the conventions; SQLite sessions get the durability
pragmas and ``BEGIN IMMEDIATE`` for writes (ADR 0004)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from mercato.db import migrate
from mercato.db.engine import Database
from mercato.db.models import metadata
from tests.conftest import POSTGRES_URL

REVISION_FILE = re.compile(r"^\d{8}_\d{4}_[0-9a-f]+_[a-z0-9_]+\.py$")


@pytest.fixture
async def fresh_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a new SQLite file, or a new PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/fresh.db"
        return
    assert POSTGRES_URL is not None
    name = f"mercato_mig_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def _schema(url: str) -> dict[str, dict[str, Any]]:
    """Reflect, for every table the models declare, its constraint and index names."""

    def reflect(sync_conn: Any) -> dict[str, dict[str, Any]]:
        inspector = inspect(sync_conn)
        present = set(inspector.get_table_names())
        return {
            table: {
                "pk": inspector.get_pk_constraint(table),
                "fks": inspector.get_foreign_keys(table),
                "uqs": inspector.get_unique_constraints(table),
                "cks": inspector.get_check_constraints(table),
                "ixs": inspector.get_indexes(table),
            }
            for table in metadata.tables
            if table in present
        }

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(reflect)
    finally:
        await engine.dispose()


def naming_problems(schema: dict[str, dict[str, Any]]) -> list[str]:
    """Constraint and index names that do not follow ``mercato.db.base.NAMING_CONVENTION``."""
    problems = []
    for table, parts in schema.items():
        if parts["pk"].get("name") != f"pk_{table}":
            problems.append(f"{table}: primary key named {parts['pk'].get('name')!r}, want 'pk_{table}'")
        for fk in parts["fks"]:
            want = f"fk_{table}_{fk['constrained_columns'][0]}_{fk['referred_table']}"
            if fk.get("name") != want:
                problems.append(f"{table}: foreign key named {fk.get('name')!r}, want {want!r}")
        for uq in parts["uqs"]:
            want = f"uq_{table}_{uq['column_names'][0]}"
            if uq.get("name") != want:
                problems.append(f"{table}: unique constraint named {uq.get('name')!r}, want {want!r}")
        for ck in parts["cks"]:
            if not (ck.get("name") or "").startswith(f"ck_{table}_"):
                problems.append(f"{table}: check constraint named {ck.get('name')!r}, want 'ck_{table}_...'")
        for ix in parts["ixs"]:
            if ix.get("duplicates_constraint"):  # PostgreSQL's index behind a unique constraint
                continue
            # Convention-named indexes are ix_<table>_<column>; explicitly named ones (partial, expression,
            # full-text) keep the table prefix, and a unique index may be named like the constraint it is.
            name = ix.get("name") or ""
            prefixes = (f"ix_{table}_", f"uq_{table}_") if ix.get("unique") else (f"ix_{table}_",)
            if not name.startswith(prefixes):
                want = " or ".join(prefix + "..." for prefix in prefixes)
                problems.append(f"{table}: index named {name!r}, want {want}")
    return problems


async def test_fresh_database_upgrades_to_head_and_matches_models(fresh_url: str) -> None:
    await migrate.upgrade(fresh_url)

    assert await migrate.pending_diff(fresh_url) == []
    schema = await _schema(fresh_url)
    assert set(schema) == set(metadata.tables)
    assert naming_problems(schema) == []


async def test_upgrade_twice_is_a_no_op(fresh_url: str) -> None:
    await migrate.upgrade(fresh_url)
    await migrate.upgrade(fresh_url)

    engine = create_async_engine(fresh_url)
    try:
        async with engine.connect() as conn:
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    finally:
        await engine.dispose()
    heads = ScriptDirectory.from_config(migrate.alembic_config(fresh_url)).get_heads()
    assert versions == heads


async def test_pending_diff_reports_a_schema_that_lags_the_models(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/lagging.db"
    await migrate.upgrade(url)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP INDEX ix_jobs_status"))
    finally:
        await engine.dispose()

    diff = await migrate.pending_diff(url)

    assert [(entry[0], entry[1].name) for entry in diff] == [("add_index", "ix_jobs_status")]


def test_naming_check_catches_a_badly_named_constraint() -> None:
    schema = {
        "orders": {
            "pk": {"name": "orders_pkey"},
            "fks": [{"name": "orders_fkey", "constrained_columns": ["user_id"], "referred_table": "users"}],
            "uqs": [{"name": "orders_number_key", "column_names": ["number"]}],
            "cks": [{"name": "positive_total"}],
            "ixs": [
                {"name": "idx_orders_status", "column_names": ["status"], "unique": False},
                {"name": "uq_orders_status", "column_names": ["status"], "unique": False},
            ],
        }
    }
    assert len(naming_problems(schema)) == 6
    good = {
        "orders": {
            "pk": {"name": "pk_orders"},
            "fks": [
                {
                    "name": "fk_orders_user_id_users",
                    "constrained_columns": ["user_id"],
                    "referred_table": "users",
                },
            ],
            "uqs": [{"name": "uq_orders_number", "column_names": ["number"]}],
            "cks": [{"name": "ck_orders_positive_total"}],
            "ixs": [
                {"name": "ix_orders_status", "column_names": ["status"], "unique": False},
                {"name": "uq_orders_open_number", "column_names": ["number"], "unique": True},
            ],
        }
    }
    assert naming_problems(good) == []


def test_revision_files_are_dated_and_slugged() -> None:
    versions = migrate.MIGRATIONS / "versions"
    names = sorted(p.name for p in versions.glob("*.py") if p.name != "__init__.py")
    assert names, "no revision files found"
    assert [n for n in names if not REVISION_FILE.match(n)] == []
    for bad in ("0c9ff64956cc_identity.py", "20261122_0645_0c9ff64956cc_Identity.py", "2026_0645_ab_x.py"):
        assert not REVISION_FILE.match(bad)


def test_revisions_form_one_line_of_history() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1
    assert len(script.get_bases()) == 1


# --- SQLite connection settings ----------------------------------------------------------------------------


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/pragmas.db")
    try:
        yield db
    finally:
        await db.dispose()


@pytest.mark.parametrize("write", [False, True])
async def test_sqlite_sessions_are_durable_and_enforce_foreign_keys(sqlite_db: Database, write: bool) -> None:
    async with sqlite_db.session(write=write) as session:
        pragmas = {
            name: (await session.execute(text(f"PRAGMA {name}"))).scalar_one()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["synchronous"] == 2  # FULL
    assert pragmas["foreign_keys"] == 1
    assert pragmas["busy_timeout"] >= 5000


@pytest.mark.parametrize("write", [True, False])
async def test_sqlite_sessions_begin_with_their_first_statement(
    sqlite_db: Database, tmp_path: Path, write: bool
) -> None:
    """``BEGIN`` travels with a transaction's first statement (db/sqlite_cursor.py) and is really sent: a write
    session holds the write lock from its first statement (``BEGIN IMMEDIATE``), a read session reads one
    snapshot (``BEGIN``) and takes no lock. Transactions that ran no statement before them (never begun in SQLite:
    their commit is no hop) change nothing of that."""
    for empty in (True, False):
        async with sqlite_db.session(write=empty):
            pass
    async with sqlite_db.session(write=True) as session:
        await session.execute(text("CREATE TABLE IF NOT EXISTS t (n INTEGER)"))
    other = sqlite3.connect(tmp_path / "pragmas.db", timeout=0, isolation_level=None)
    try:
        async with sqlite_db.session(write=write) as session:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
            if write:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            else:
                other.execute("INSERT INTO t VALUES (1)")  # no lock held; committed at once
                assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0  # same snapshot
        async with sqlite_db.session(write=False) as session:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == (0 if write else 1)
    finally:
        other.close()


async def test_sqlite_writers_of_a_process_take_turns_in_arrival_order(sqlite_db: Database) -> None:
    """Writers queue for the one writer connection first come, first served (not in SQLite's busy handler,
    where a newcomer can overtake a writer that has waited for seconds); readers do not wait for them."""
    finished: list[int] = []
    holder_started = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with sqlite_db.session(write=True) as session:
            await session.execute(text("SELECT 1"))
            holder_started.set()
            await release.wait()

    async def writer(index: int) -> None:
        async with sqlite_db.session(write=True) as session:
            await session.execute(text("SELECT 1"))
            finished.append(index)

    first = asyncio.create_task(holder())
    await holder_started.wait()
    writers = []
    for index in range(12):
        writers.append(asyncio.create_task(writer(index)))
        await asyncio.sleep(0.01)  # each one queued before the next arrives
    async with sqlite_db.session(write=False) as reader:  # a reader is not stuck behind the queue
        assert (await reader.execute(text("SELECT 1"))).scalar_one() == 1
    release.set()
    await asyncio.gather(first, *writers)

    assert finished == list(range(12))


ORPHAN_SESSION = text(
    "INSERT INTO auth_sessions (id, user_id, method, created_at, last_used_at, expires_at)"
    " VALUES (:id, :user, 'password', '2030-01-01', '2030-01-01', '2030-01-02')"
)


async def test_sqlite_enforces_foreign_keys_on_migrated_tables(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/fk.db"
    await migrate.upgrade(url)
    db = Database(url)
    try:
        with pytest.raises(IntegrityError, match="FOREIGN KEY constraint failed"):
            async with db.session(write=True) as session:
                await session.execute(ORPHAN_SESSION, {"id": uuid.uuid4().hex, "user": uuid.uuid4().hex})
        async with db.session(write=False) as session:
            assert (await session.execute(text("SELECT count(*) FROM auth_sessions"))).scalar_one() == 0
    finally:
        await db.dispose()
