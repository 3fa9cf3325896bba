"""The ``mercato`` command, run the way an operator runs it: a temporary SQLite file and data directory, exit
codes and printed messages checked, the database inspected afterwards with the standard library."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from typer.testing import CliRunner, Result

from mercato.cli import app
from mercato.db import migrate
from mercato.db.models import metadata
from tests.conftest import STRONG_PASSWORD
from tests.integration.conftest import mercato_env

MERCATO = Path(sys.executable).with_name("mercato")
SECRET = "cli-test-secret-key-0123456789abcdef"


class Shop:
    """One installation: a SQLite file and a data directory, and the environment that points at them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db_path = root / "var" / "mercato.db"
        self.data_dir = root / "var"
        self.env: dict[str, str | None] = {key: None for key in os.environ if key.startswith("MERCATO_")}
        self.env.update(
            {
                "MERCATO_DATABASE_URL": f"sqlite+aiosqlite:///{self.db_path}",
                "MERCATO_DATA_DIR": str(self.data_dir),
                "MERCATO_SECRET_KEY": SECRET,
            }
        )

    def run(self, *args: str, **env: str) -> Result:
        """Run ``mercato <args>`` in this process, with extra ``MERCATO_*`` variables (``redis_url=...``)."""
        extra = {f"MERCATO_{key.upper()}": value for key, value in env.items()}
        return CliRunner().invoke(app, list(args), env={**self.env, **extra})

    def sql(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with contextlib.closing(sqlite3.connect(self.db_path)) as conn, conn:
            return conn.execute(query, params).fetchall()

    def add_user(self, email: str, role: str) -> uuid.UUID:
        user_id = uuid.uuid4()
        self.sql(
            "INSERT INTO users (id, email, role, email_verified, created_at, updated_at)"
            " VALUES (?, ?, ?, 1, '2030-01-01 00:00:00.000000', '2030-01-01 00:00:00.000000')",
            (user_id.hex, email, role),
        )
        return user_id


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database migrated once by ``mercato migrate``; tests start from copies of it."""
    shop = Shop(tmp_path_factory.mktemp("template"))
    with contextlib.chdir(shop.root):
        result = shop.run("migrate")
    assert result.exit_code == 0, result.output
    return shop.db_path


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shop:
    """A fresh installation with no database yet; the working directory holds no ``.env`` file."""
    monkeypatch.chdir(tmp_path)
    return Shop(tmp_path)


@pytest.fixture
def migrated_shop(shop: Shop, migrated_template: Path) -> Shop:
    shop.data_dir.mkdir(parents=True)
    shutil.copyfile(migrated_template, shop.db_path)
    return shop


def test_version_prints_the_installed_version(shop: Shop) -> None:
    result = shop.run("version")

    assert result.exit_code == 0
    assert result.stdout == importlib.metadata.version("mercato") + "\n"


def test_migrate_creates_every_table_at_head(shop: Shop) -> None:
    result = shop.run("migrate")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "database is up to date"
    tables = {name for (name,) in shop.sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert set(metadata.tables) <= tables
    head = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()
    assert shop.sql("SELECT version_num FROM alembic_version") == [(head,)]


def test_migrate_again_keeps_the_data(migrated_shop: Shop) -> None:
    migrated_shop.add_user("kept@example.com", "customer")

    result = migrated_shop.run("migrate")

    assert result.exit_code == 0, result.output
    assert migrated_shop.sql("SELECT email FROM users") == [("kept@example.com",)]


def test_check_passes_on_a_healthy_database(migrated_shop: Shop) -> None:
    migrated_shop.add_user("owner@example.com", "admin")
    migrated_shop.add_user("buyer@example.com", "customer")

    result = migrated_shop.run("check")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "all checks passed"


def test_create_admin_creates_a_verified_admin_once(shop: Shop) -> None:
    result = shop.run("create-admin", "--email", "A@B.co", "--password", STRONG_PASSWORD)

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "admin a@b.co created"
    [(email, role, verified, password_hash, deleted_at)] = shop.sql(
        "SELECT email, role, email_verified, password_hash, deleted_at FROM users"
    )
    assert (email, role, verified, deleted_at) == ("a@b.co", "admin", 1, None)
    assert isinstance(password_hash, str)
    assert password_hash.startswith("$argon2id$")
    assert STRONG_PASSWORD not in password_hash

    again = shop.run("create-admin", "--email", "a@b.co", "--password", "another-strong-passphrase-7")

    assert again.exit_code == 1
    assert "an account with email a@b.co already exists" in again.stderr
    assert shop.sql("SELECT count(*), max(password_hash) FROM users") == [(1, password_hash)]
    assert shop.run("check").exit_code == 0


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("boss@example.com", "password", "too common"),
        ("boss@example.com", "short1", "at least 8 characters"),
        ("bossman@example.com", "bossman@example.com", "must not be your email"),
        ("not-an-email", STRONG_PASSWORD, "is not an email address"),
    ],
)
def test_create_admin_refuses_bad_input_and_creates_nothing(
    migrated_shop: Shop, email: str, password: str, message: str
) -> None:
    result = migrated_shop.run("create-admin", "--email", email, "--password", password)

    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert migrated_shop.sql("SELECT count(*) FROM users") == [(0,)]


def test_check_reports_a_user_with_an_unknown_role(migrated_shop: Shop) -> None:
    migrated_shop.add_user("owner@example.com", "admin")
    wizard = migrated_shop.add_user("merlin@example.com", "wizard")

    result = migrated_shop.run("check")

    assert result.exit_code == 1
    assert f"identity.roles: user {wizard} has unknown role 'wizard'" in result.stdout.splitlines()
    assert "all checks passed" not in result.output


def test_check_reports_users_without_any_admin(migrated_shop: Shop) -> None:
    migrated_shop.add_user("buyer@example.com", "customer")

    result = migrated_shop.run("check")

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "identity.admin_exists: no admin account exists; create one with `mercato create-admin`"
    ]


def test_check_reports_an_unmigrated_database(shop: Shop) -> None:
    shop.data_dir.mkdir()
    sqlite3.connect(shop.db_path).close()  # an empty database file

    result = shop.run("check")

    assert result.exit_code == 1
    assert "run `mercato migrate`" in result.stdout


def test_check_reports_an_unreachable_database(shop: Shop) -> None:
    result = shop.run("check", database_url="postgresql+asyncpg://mercato@127.0.0.1:1/mercato")

    assert result.exit_code == 1
    assert result.stdout.startswith("database unreachable")


def test_check_reports_an_unreachable_redis(migrated_shop: Shop) -> None:
    result = migrated_shop.run("check", redis_url="redis://127.0.0.1:1/0")

    assert result.exit_code != 0
    assert "redis unreachable" in result.stdout
    assert "all checks passed" not in result.output


@pytest.mark.parametrize(
    "args",
    [["migrate"], ["check"], ["create-admin", "--email", "a@b.co", "--password", STRONG_PASSWORD]],
)
def test_production_without_a_secret_refuses_every_command(shop: Shop, args: list[str]) -> None:
    shop.env["MERCATO_SECRET_KEY"] = None

    result = shop.run(*args, env="production")

    assert result.exit_code == 2
    assert "Refusing to start: MERCATO_SECRET_KEY must be set in production" in result.stderr
    assert not shop.db_path.exists()


def test_serve_in_production_without_a_secret_exits_2(tmp_path: Path) -> None:
    env = mercato_env(
        env="production",
        data_dir=str(tmp_path / "var"),
        database_url=f"sqlite+aiosqlite:///{tmp_path}/var/mercato.db",
    )

    done = subprocess.run(
        [str(MERCATO), "serve", "--port", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 2
    assert "Refusing to start: MERCATO_SECRET_KEY must be set in production" in done.stderr
    assert not (tmp_path / "var" / "mercato.db").exists()
