"""Alembic driven from code: ``upgrade(url)`` brings a database to the newest revision, ``pending_diff(url)``
lists differences between the models and the migrated schema (empty when they agree).

Revision files live in ``mercato/db/migrations/versions`` and are named ``YYYYMMDD_HHMM_<rev>_<slug>.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic configuration pointing at the packaged migrations and ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(hour).2d%%(minute).2d_%%(rev)s_%%(slug)s")
    cfg.set_main_option("timezone", "UTC")
    return cfg


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (run in a worker thread: Alembic's env runs its own event loop)."""
    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)


def revision(url: str, message: str) -> None:
    """Autogenerate a new revision from the models (developer command: ``make migration m="..."``)."""
    command.revision(alembic_config(url), message=message, autogenerate=True)


async def pending_diff(url: str) -> list[Any]:
    """Differences between the models and the database at ``url`` (which should be at head). The tables of the
    search index (``mercato.catalog.search.INDEX_TABLES``), which are not models, are left out."""
    from mercato.catalog.search import include_name
    from mercato.db.models import metadata

    opts = {"compare_type": True, "include_name": include_name}  # the search index's tables are not models
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync_conn: compare_metadata(MigrationContext.configure(sync_conn, opts=opts), metadata)
            )
    finally:
        await engine.dispose()
