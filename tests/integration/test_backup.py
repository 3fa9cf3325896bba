"""``mercato backup`` and ``mercato restore``, run the way an operator runs them, on SQLite and PostgreSQL.

Each test builds its own installation (a data directory and a database: a SQLite file, or a PostgreSQL database
created by the test and dropped afterwards), puts a product with an uploaded image and a customer in it through
the API, and checks what a restore brings back: the rows (through the API), the image file, the customer's login.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.script import ScriptDirectory
from PIL import Image
from sqlalchemy import text
from typer.testing import CliRunner, Result

from mercato.app import create_app
from mercato.cli import app as cli
from mercato.config import Settings
from mercato.db import migrate
from mercato.platform.context import Services
from tests.conftest import POSTGRES_URL, STRONG_PASSWORD, _create_postgres, _drop_postgres, bearer, make_admin

P = "/api/v1/products"
SECRET = "backup-test-secret-key-0123456789abcdef"
CUSTOMER = "buyer@example.com"


class Installation:
    """One shop: a data directory and a database, and the ``MERCATO_*`` environment pointing at them."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.data_dir = root / "var"
        self.url = url
        self.env: dict[str, str | None] = {key: None for key in os.environ if key.startswith("MERCATO_")}
        self.env.update(
            {"MERCATO_DATABASE_URL": url, "MERCATO_DATA_DIR": str(self.data_dir), "MERCATO_SECRET_KEY": SECRET}
        )

    def settings(self) -> Settings:
        return Settings.load(
            env="test",
            database_url=self.url,
            data_dir=self.data_dir,
            run_jobs=False,
            password_hash_memory_kib=1024,
            password_hash_time_cost=1,
            secret_key=SECRET,
            rate_limits=False,
        )

    def run(self, *args: str) -> Result:
        """``mercato <args>`` in this process, with this installation's environment."""
        return CliRunner().invoke(cli, list(args), env=self.env)

    def api(self, scenario: Any) -> Any:
        """Run ``await scenario(client, services)`` against this installation's app; return its result."""

        async def go() -> Any:
            services = Services.build(self.settings())
            try:
                transport = httpx.ASGITransport(app=create_app(services.settings, services=services))
                async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                    return await scenario(client, services)
            finally:
                await services.close()

        return asyncio.run(go())


@pytest.fixture
def installations(backend: str, tmp_path: Path) -> Iterator[Any]:
    """A factory of empty installations on ``backend``; PostgreSQL databases are dropped after the test."""
    created: list[str] = []

    def make(name: str) -> Installation:
        root = tmp_path / name
        if backend == "sqlite":
            return Installation(root, f"sqlite+aiosqlite:///{root}/var/mercato.db")
        assert POSTGRES_URL is not None
        database = f"mercato_backup_{uuid.uuid4().hex[:10]}"
        created.append(database)
        return Installation(root, asyncio.run(_create_postgres(POSTGRES_URL, database)))

    yield make
    for database in created:
        assert POSTGRES_URL is not None
        asyncio.run(_drop_postgres(POSTGRES_URL, database))


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 120, 200)).save(out, "PNG")
    return out.getvalue()


def stocked(shop: Installation) -> dict[str, Any]:
    """Migrate ``shop`` and add, through the API, an admin, a customer and an active product with an image."""
    shop.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(migrate.upgrade(shop.url))

    async def scenario(client: httpx.AsyncClient, services: Services) -> dict[str, Any]:
        admin = bearer(await make_admin(services, client))
        registered = await client.post("/api/v1/auth/register", json={"email": CUSTOMER, "password": STRONG_PASSWORD})
        assert registered.status_code == 201, registered.text
        body = {"name": "Desk lamp", "sku": "LAMP-1", "price": "10.00", "status": "active"}
        product = await client.post(P, json=body, headers=admin)
        assert product.status_code == 201, product.text
        image = await client.post(
            f"{P}/{product.json()['id']}/images", files={"file": ("lamp.png", png(), "image/png")}, headers=admin
        )
        assert image.status_code == 201, image.text
        return {"admin": admin, "product": product.json()["id"], "image": image.json()}

    data: dict[str, Any] = shop.api(scenario)
    data["file"] = shop.data_dir / "media" / data["image"]["url"].removeprefix("/media/")
    data["bytes"] = data["file"].read_bytes()
    return data


def product_and_login(shop: Installation, product_id: str) -> tuple[int, list[str], int]:
    """What a visitor sees of the product (status, image URLs) and the customer's login status."""

    async def scenario(client: httpx.AsyncClient, _services: Services) -> tuple[int, list[str], int]:
        product = await client.get(f"{P}/{product_id}")
        urls = [image["url"] for image in product.json().get("images", [])] if product.status_code == 200 else []
        login = await client.post("/api/v1/auth/login", json={"email": CUSTOMER, "password": STRONG_PASSWORD})
        return product.status_code, urls, login.status_code

    result: tuple[int, list[str], int] = shop.api(scenario)
    return result


def wipe(shop: Installation, data: dict[str, Any]) -> None:
    """Delete the image (its file goes too) and the product through the API."""

    async def scenario(client: httpx.AsyncClient, _services: Services) -> None:
        product, image = data["product"], data["image"]["id"]
        gone = await client.delete(f"{P}/{product}/images/{image}", headers=data["admin"])
        assert gone.status_code == 204, gone.text
        deleted = await client.delete(f"{P}/{product}", headers=data["admin"])
        assert deleted.status_code == 204, deleted.text

    shop.api(scenario)
    assert not data["file"].exists()
    assert product_and_login(shop, data["product"])[0] == 404


def backed_up(shop: Installation, *args: str) -> Path:
    result = shop.run("backup", *args)
    assert result.exit_code == 0, result.output
    match = re.fullmatch(r"(.+) \((\d+) bytes\)\n", result.stdout)
    assert match is not None, result.stdout
    path = Path(match[1])
    assert path.stat().st_size == int(match[2])
    return path


def head() -> str | None:
    head: str | None = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()
    return head


def test_backup_then_restore_brings_back_the_rows_and_the_image(backend: str, installations: Any) -> None:
    shop = installations("shop")
    data = stocked(shop)

    archive = backed_up(shop)

    assert archive.parent == shop.data_dir / "backups"
    assert re.fullmatch(r"mercato-\d{8}T\d{6}Z\.tar\.gz", archive.name)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest_file = tar.extractfile("manifest.json")
        assert manifest_file is not None
        manifest = json.load(manifest_file)
    database_file = "database.sqlite3" if backend == "sqlite" else "database.pgdump"
    image_member = "media/" + data["image"]["url"].removeprefix("/media/")
    assert {"manifest.json", database_file, image_member} <= names
    assert manifest["database"] == ("sqlite" if backend == "sqlite" else "postgresql")
    assert manifest["alembic_revision"] == head()
    assert manifest["database_file"] == database_file
    assert manifest["media_files"] == 2  # the image and its thumbnail

    wipe(shop, data)
    result = shop.run("restore", str(archive), "--yes")

    assert result.exit_code == 0, result.output
    assert "restored the" in result.stdout
    assert archive.stat().st_mode & 0o777 == 0o600
    assert product_and_login(shop, data["product"]) == (200, [data["image"]["url"]], 200)
    assert data["file"].read_bytes() == data["bytes"]
    if backend != "sqlite":  # pg_restore recreated the tables without planner statistics: restore ANALYZEd them
        shop.api(products_analysed)


async def products_analysed(_client: httpx.AsyncClient, services: Services) -> None:
    query = text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'products'")
    for _ in range(50):  # the statistics views may show the ANALYZE a moment later
        async with services.db.engine.connect() as conn:
            if await conn.scalar(query) is not None:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("products was not analysed after the restore")


def test_restore_into_a_new_installation_needs_no_confirmation(installations: Any) -> None:
    shop = installations("shop")
    data = stocked(shop)
    archive = backed_up(shop, str(shop.root / "nightly.tar.gz"))
    replacement = installations("replacement")  # a new machine: empty database, no data directory

    result = replacement.run("restore", str(archive))

    assert result.exit_code == 0, result.output
    assert product_and_login(replacement, data["product"]) == (200, [data["image"]["url"]], 200)
    restored_file = replacement.data_dir / "media" / data["image"]["url"].removeprefix("/media/")
    assert restored_file.read_bytes() == data["bytes"]


def test_restore_into_a_database_with_data_without_yes_is_refused_and_changes_nothing(installations: Any) -> None:
    shop = installations("shop")
    data = stocked(shop)
    archive = backed_up(shop, str(shop.root / "nightly.tar.gz"))
    wipe(shop, data)

    result = shop.run("restore", str(archive))

    assert result.exit_code == 1
    assert "is not empty; pass --yes" in result.stderr
    assert product_and_login(shop, data["product"]) == (404, [], 200)
    assert not data["file"].exists()


def _rewrite(archive: Path, target: Path, change: Any) -> None:
    """Copy ``archive`` to ``target`` with ``change(name, bytes) -> bytes`` applied to every file member."""
    with tarfile.open(archive) as source, tarfile.open(target, "w:gz") as out:
        for member in source.getmembers():
            handle = source.extractfile(member)
            if handle is None:
                out.addfile(member)
                continue
            content = change(member.name, handle.read())
            member.size = len(content)
            out.addfile(member, io.BytesIO(content))


def _flip_database_byte(name: str, content: bytes) -> bytes:
    if name.startswith("database."):
        middle = len(content) // 2
        return content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1 :]
    return content


@pytest.mark.parametrize("damage", ["truncated", "not-gzip", "tampered-database", "no-manifest"])
def test_a_corrupt_archive_is_refused_and_changes_nothing(installations: Any, damage: str) -> None:
    shop = installations("shop")
    data = stocked(shop)
    archive = backed_up(shop, str(shop.root / "nightly.tar.gz"))
    wipe(shop, data)
    bad = shop.root / "bad.tar.gz"
    if damage == "truncated":
        bad.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    elif damage == "not-gzip":
        bad.write_bytes(b"this is not a backup\n" * 100)
    elif damage == "tampered-database":
        _rewrite(archive, bad, _flip_database_byte)
    else:
        with tarfile.open(bad, "w:gz") as tar:
            info = tarfile.TarInfo("database.sqlite3")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"junk"))

    result = shop.run("restore", str(bad), "--yes")

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert re.search(r"corrupt|not a readable Mercato backup|no manifest\.json", result.stderr), result.stderr
    assert product_and_login(shop, data["product"]) == (404, [], 200)
    assert not data["file"].exists()


def test_an_archive_from_a_newer_release_is_refused(installations: Any) -> None:
    shop = installations("shop")
    data = stocked(shop)
    archive = backed_up(shop, str(shop.root / "nightly.tar.gz"))
    wipe(shop, data)
    newer = shop.root / "newer.tar.gz"

    def future(name: str, content: bytes) -> bytes:
        if name != "manifest.json":
            return content
        manifest = json.loads(content)
        manifest["alembic_revision"] = "ffffffffffff"
        return json.dumps(manifest).encode()

    _rewrite(archive, newer, future)

    result = shop.run("restore", str(newer), "--yes")

    assert result.exit_code == 1
    assert "database revision ffffffffffff, newer than this Mercato" in result.stderr
    assert product_and_login(shop, data["product"]) == (404, [], 200)


@pytest.mark.parametrize("target", ["empty", "at-head-with-data"])
def test_an_archive_from_an_older_release_is_migrated_after_restoring(installations: Any, target: str) -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    current = head()
    assert current is not None
    previous = scripts.get_revision(current).down_revision
    assert isinstance(previous, str)
    old = installations("old")
    old.data_dir.mkdir(parents=True)
    asyncio.run(migrate.upgrade(old.url, previous))
    archive = backed_up(old, str(old.root / "old.tar.gz"))
    with tarfile.open(archive) as tar:
        manifest_file = tar.extractfile("manifest.json")
        assert manifest_file is not None
        assert json.load(manifest_file)["alembic_revision"] == previous
    new = installations("new")
    data = stocked(new) if target == "at-head-with-data" else None

    result = new.run("restore", str(archive), *(["--yes"] if data else []))

    assert result.exit_code == 0, result.output
    assert "migrated to this release's schema" in result.stdout
    if data is not None:  # replaced by the old, empty shop
        assert product_and_login(new, data["product"]) == (404, [], 401)
        assert not data["file"].exists()
    assert asyncio.run(migrate.pending_diff(new.url)) == []
    check = new.run("check")  # schema equal to the models, every data invariant
    assert check.exit_code == 0, check.output


@pytest.mark.backends("sqlite")
def test_a_sqlite_backup_taken_while_a_write_is_in_the_wal_holds_it(installations: Any) -> None:
    shop = installations("shop")
    stocked(shop)
    db = Path(shop.url.split(":///", 1)[1])
    writer = sqlite3.connect(db)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")  # keep the commit in the -wal file only
        writer.execute("UPDATE products SET name = 'Lamp in the WAL'")
        writer.commit()
        assert Path(f"{db}-wal").stat().st_size > 0

        archive = backed_up(shop, str(shop.root / "online.tar.gz"))
    finally:
        writer.close()

    with tarfile.open(archive) as tar:
        copy = tar.extractfile("database.sqlite3")
        assert copy is not None
        restored = shop.root / "copy.db"
        restored.write_bytes(copy.read())
    with contextlib.closing(sqlite3.connect(restored)) as conn:
        assert conn.execute("SELECT name FROM products").fetchall() == [("Lamp in the WAL",)]


def test_backup_without_pg_dump_on_path_says_so_and_writes_nothing(tmp_path: Path) -> None:
    shop = Installation(tmp_path, "postgresql+asyncpg://mercato@127.0.0.1:1/mercato")
    shop.env["PATH"] = str(tmp_path / "empty-bin")
    archive = tmp_path / "nightly.tar.gz"

    result = shop.run("backup", str(archive))

    assert result.exit_code == 1
    assert "pg_dump was not found on PATH; install the PostgreSQL client tools" in result.stderr
    assert not archive.exists()
    assert list(archive.parent.glob(".mercato-backup-*")) == []


def test_backup_of_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    shop = Installation(tmp_path, "postgresql+asyncpg://mercato:hunter2-password@127.0.0.1:1/mercato")

    result = shop.run("backup", str(tmp_path / "nightly.tar.gz"))

    assert result.exit_code == 1
    assert result.stderr.startswith("cannot read the database postgresql+asyncpg://mercato:***@127.0.0.1:1/mercato")
    assert "hunter2" not in result.output
    assert "Traceback" not in result.output


@pytest.mark.backends("sqlite")
def test_restore_refuses_while_another_process_has_the_sqlite_database_open(installations: Any) -> None:
    shop = installations("shop")
    data = stocked(shop)
    archive = backed_up(shop, str(shop.root / "nightly.tar.gz"))
    wipe(shop, data)
    db = shop.url.split(":///", 1)[1]
    holder = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT 1 FROM products').fetchall()"
    server = subprocess.Popen(
        [sys.executable, "-c", holder + "; print('open', flush=True); sys.stdin.read()", db],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == "open\n"

        result = shop.run("restore", str(archive), "--yes")
    finally:
        server.communicate("", timeout=30)

    assert result.exit_code == 1
    assert "is open in another process" in result.stderr
    assert product_and_login(shop, data["product"]) == (404, [], 200)
    assert not data["file"].exists()
    assert shop.run("restore", str(archive), "--yes").exit_code == 0  # once it is closed
    assert product_and_login(shop, data["product"])[0] == 200


@pytest.mark.backends("postgres")
def test_restoring_a_backup_that_lacks_tables_of_the_database_is_refused_and_changes_nothing(
    installations: Any,
) -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    before_payments = scripts.get_revision("fc86ff023386").down_revision  # the payments tables come after it
    assert isinstance(before_payments, str)
    old = installations("old")
    old.data_dir.mkdir(parents=True)
    asyncio.run(migrate.upgrade(old.url, before_payments))
    archive = backed_up(old, str(old.root / "old.tar.gz"))
    shop = installations("shop")
    data = stocked(shop)

    result = shop.run("restore", str(archive), "--yes")

    assert result.exit_code == 1
    assert "tables this backup does not have" in result.stderr
    assert "payments" in result.stderr
    assert product_and_login(shop, data["product"]) == (200, [data["image"]["url"]], 200)
    assert data["file"].read_bytes() == data["bytes"]
