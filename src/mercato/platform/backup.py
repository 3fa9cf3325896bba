"""``mercato backup`` and ``mercato restore``: one ``.tar.gz`` archive holding the database and the local media.

Archive layout (every member at the top level, nothing else is accepted on restore):

- ``manifest.json`` — ``{"format": 1, "mercato_version", "alembic_revision", "database": "sqlite" |
  "postgresql", "created_at" (UTC, ISO 8601), "database_file", "database_sha256", "media_files"}``;
- ``database.sqlite3`` — a consistent copy made with SQLite's online backup API (safe while the server runs,
  WAL included), or ``database.pgdump`` — ``pg_dump --format=custom`` of the configured PostgreSQL database;
- ``media/...`` — the uploaded images under ``<data dir>/media`` (absent when media live in S3).

Restoring checks the archive before touching anything (readable, manifest, checksum, database kind, Alembic
revision known to this code), refuses a non-empty target unless forced, then replaces the database (SQLite: an
atomic rename of a verified copy; PostgreSQL: ``pg_restore --clean --if-exists --single-transaction``) and the
media directory, and migrates an archive from an older release up to this code's head.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

import mercato
from mercato.config import Settings

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_MEMBER = "database.sqlite3"
POSTGRES_MEMBER = "database.pgdump"
MEDIA = "media"

#: tarfile's "data" filter (Python >= 3.11.4) on top of :func:`_open`'s own member checks
_SAFE_EXTRACT: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do. Nothing was changed."""


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` records about an archive."""

    mercato_version: str
    alembic_revision: str | None
    database: str
    created_at: str
    database_file: str
    database_sha256: str
    media_files: int

    def to_json(self) -> bytes:
        """The manifest as UTF-8 JSON bytes, with ``"format": 1``."""
        return json.dumps({"format": FORMAT, **self.__dict__}, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse ``manifest.json``.

        Raises:
            BackupError: not JSON, another format version, or a missing/mistyped field.
        """
        try:
            raw = json.loads(data)
            if raw.get("format") != FORMAT:
                raise BackupError(f"unsupported backup format {raw.get('format')!r} (this Mercato reads {FORMAT})")
            manifest = cls(**{key: raw[key] for key in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackupError(f"the archive's {MANIFEST} is invalid: {exc}") from exc
        if manifest.database not in {"sqlite", "postgresql"} or manifest.database_file not in {
            SQLITE_MEMBER,
            POSTGRES_MEMBER,
        }:
            raise BackupError(f"the archive's {MANIFEST} names an unknown database kind")
        return manifest


def database_kind(settings: Settings) -> str:
    """``"sqlite"`` or ``"postgresql"`` for the configured ``MERCATO_DATABASE_URL``.

    Raises:
        BackupError: another database.
    """
    if settings.is_sqlite:
        return "sqlite"
    if settings.database_url.startswith("postgresql"):
        return "postgresql"
    raise BackupError(f"backups support SQLite and PostgreSQL, not {make_url(settings.database_url).drivername}")


def sqlite_path(settings: Settings) -> Path:
    """The SQLite database file of ``MERCATO_DATABASE_URL``.

    Raises:
        BackupError: an in-memory database.
    """
    if settings.sqlite_file is None:
        raise BackupError("an in-memory SQLite database cannot be backed up or restored")
    return settings.sqlite_file


def default_path(settings: Settings, now: datetime) -> Path:
    """``<data dir>/backups/mercato-<UTC timestamp>.tar.gz`` (timestamp ``YYYYMMDDTHHMMSSZ``)."""
    return settings.data_dir / "backups" / f"mercato-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.tar.gz"


def code_head() -> str | None:
    """The newest Alembic revision of this code."""
    head: str | None = _scripts().get_current_head()
    return head


def _scripts() -> Any:
    from alembic.script import ScriptDirectory

    from mercato.db import migrate

    return ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))


def _libpq(settings: Settings) -> tuple[str, dict[str, str]]:
    """A libpq connection string for pg_dump/pg_restore, and the environment carrying the password
    (``PGPASSWORD``, never on the command line, where ``ps`` shows it). Driver-specific query options of the
    SQLAlchemy URL are left out."""
    url: URL = make_url(settings.database_url)
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    plain = URL.create("postgresql", url.username, None, url.host, url.port, url.database)
    return plain.render_as_string(hide_password=False), env


def _postgres_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} was not found on PATH; install the PostgreSQL client tools (same major version as the server "
            "or newer), e.g. apt-get install postgresql-client"
        )
    return found


def _run(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - no shell
    if done.returncode != 0:
        raise BackupError(f"{Path(args[0]).name} failed (exit {done.returncode}): {done.stderr.strip()}")


async def _inspect(url: str) -> tuple[str | None, bool]:
    """The database's Alembic revision (``None`` when unmigrated) and whether any table holds a row."""

    def read(sync_conn: Any) -> tuple[str | None, bool]:
        tables = [name for name in inspect(sync_conn).get_table_names() if not name.startswith("sqlite_")]
        revision = None
        if "alembic_version" in tables:
            revision = sync_conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        for name in tables:
            if name == "alembic_version":
                continue
            quoted = sync_conn.dialect.identifier_preparer.quote(name)
            if sync_conn.execute(select(text("1")).select_from(text(quoted)).limit(1)).first() is not None:
                return revision, True
        return revision, False

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(read)
    finally:
        await engine.dispose()


def _read_database(settings: Settings) -> tuple[str | None, bool]:
    """:func:`_inspect` of the configured database.

    Raises:
        BackupError: the database cannot be reached or read (the message names it, without its password).
    """
    try:
        return asyncio.run(_inspect(settings.database_url))
    except Exception as exc:
        raise BackupError(f"cannot read the database {_describe(settings)}: {exc}") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _media_root(settings: Settings) -> Path | None:
    """The local media directory, or ``None`` when media live in S3 (not part of the archive)."""
    return None if settings.storage_s3 is not None else settings.data_dir / MEDIA


def create_backup(settings: Settings, path: Path | None = None, *, now: datetime | None = None) -> Path:
    """Write a backup archive of the configured database and the local media directory.

    Args:
        settings: the installation's settings (database URL, data dir, storage).
        path: the archive to write (parent directories are created); by default :func:`default_path`.
        now: the backup's time (UTC) for the manifest and the default name; the clock when omitted.

    Returns:
        The archive's path (mode 0600). It is written to a temporary name beside it and renamed when complete.

    Raises:
        BackupError: the database is neither SQLite nor PostgreSQL, the SQLite file does not exist, pg_dump is
            missing or fails, or the archive exists already.
    """
    now = now or datetime.now(UTC)
    kind = database_kind(settings)
    target = path or default_path(settings, now)
    if target.exists():
        raise BackupError(f"{target} exists already; choose another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mercato-backup-", dir=target.parent) as work:
        dump = Path(work) / (SQLITE_MEMBER if kind == "sqlite" else POSTGRES_MEMBER)
        if kind == "sqlite":
            source = sqlite_path(settings)
            if not source.exists():
                raise BackupError(f"the SQLite database {source} does not exist")
            with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(dump)) as dst:
                src.backup(dst)  # consistent snapshot, WAL content included, while writers carry on
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            with contextlib.closing(sqlite3.connect(dump)) as copy:
                row = copy.execute(
                    "SELECT version_num FROM alembic_version"
                    if copy.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone()
                    else "SELECT NULL"
                ).fetchone()
                revision = row[0] if row else None
        else:
            dsn, env = _libpq(settings)
            pg_dump = _postgres_tool("pg_dump")
            revision, _ = _read_database(settings)
            _run([pg_dump, "--format=custom", f"--file={dump}", f"--dbname={dsn}"], env)
        media = _media_root(settings)
        media_files = sorted(p for p in media.rglob("*") if p.is_file()) if media and media.is_dir() else []
        manifest = Manifest(
            mercato_version=mercato.__version__,
            alembic_revision=revision,
            database=kind,
            created_at=now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            database_file=dump.name,
            database_sha256=_sha256(dump),
            media_files=len(media_files),
        )
        (Path(work) / MANIFEST).write_bytes(manifest.to_json())
        partial = Path(work) / "archive.tar.gz"
        with tarfile.open(partial, "w:gz") as archive:
            archive.add(Path(work) / MANIFEST, MANIFEST)
            archive.add(dump, dump.name)
            for file in media_files:
                assert media is not None
                archive.add(file, f"{MEDIA}/{file.relative_to(media).as_posix()}")
        os.chmod(partial, 0o600)  # customers' data and password hashes: readable by the owner only
        os.replace(partial, target)
    return target


def _open(path: Path) -> tuple[tarfile.TarFile, Manifest]:
    """Open an archive and read its manifest; every member must be a regular file or directory at a plain
    relative path (``manifest.json``, the database file, ``media/...``).

    Raises:
        BackupError: unreadable, not a gzip tar, no manifest, or an unexpected member.
    """
    try:
        archive = tarfile.open(path, "r:gz")  # noqa: SIM115 - returned open, closed by the caller
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise BackupError(f"{path} is not a readable Mercato backup (tar.gz): {exc}") from exc
    try:
        members = archive.getmembers()
        for member in members:
            name = member.name
            parts = name.split("/")
            plain = not name.startswith("/") and ".." not in parts and "" not in parts
            allowed = name in {MANIFEST, SQLITE_MEMBER, POSTGRES_MEMBER} or (plain and parts[0] == MEDIA)
            if not (member.isfile() or member.isdir()) or not plain or not allowed:
                raise BackupError(f"{path} holds an unexpected member {name!r}; not a Mercato backup")
        handle = archive.extractfile(MANIFEST)
        if handle is None:
            raise BackupError(f"{path} has no {MANIFEST}")
        manifest = Manifest.from_json(handle.read())
    except KeyError as exc:
        archive.close()
        raise BackupError(f"{path} has no {MANIFEST}; not a Mercato backup") from exc
    except (OSError, tarfile.TarError, EOFError) as exc:
        archive.close()
        raise BackupError(f"{path} is corrupt: {exc}") from exc
    except BaseException:
        archive.close()
        raise
    return archive, manifest


@dataclass(frozen=True)
class RestoreResult:
    """What :func:`restore_backup` did."""

    manifest: Manifest
    migrated: bool


class NotEmpty(BackupError):
    """The target database holds data and the restore was not confirmed (``--yes``)."""


def restore_backup(settings: Settings, path: Path, *, replace: bool = False) -> RestoreResult:
    """Restore an archive made by :func:`create_backup` into the configured database and media directory.

    Run it while no Mercato process uses the database: the SQLite file is replaced (an atomic rename of a
    verified copy) and PostgreSQL's objects are dropped and recreated (``pg_restore --clean --if-exists
    --no-owner --single-transaction``: all or nothing).

    Args:
        settings: the installation's settings.
        path: the archive.
        replace: allow replacing a database that holds data (``--yes``).

    Returns:
        The archive's manifest and whether migrations ran afterwards (an archive from an older release).

    Raises:
        NotEmpty: the target holds data and ``replace`` is false; nothing was changed.
        BackupError: a corrupt or foreign archive (checksum, members, manifest), another database kind, an
            Alembic revision this code does not know (a newer release's backup), a SQLite database another
            process has open, a PostgreSQL database with tables the backup lacks, pg_restore missing or failing;
            the database was not changed.
    """
    from mercato.db import migrate

    kind = database_kind(settings)
    restore = _postgres_tool("pg_restore") if kind == "postgresql" else ""
    archive, manifest = _open(path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with archive, tempfile.TemporaryDirectory(prefix=".mercato-restore-", dir=settings.data_dir) as work:
        if manifest.database != kind:
            raise BackupError(f"{path} is a {manifest.database} backup; the configured database is {kind}")
        revision = manifest.alembic_revision
        if revision is not None:
            try:
                known = _scripts().get_revision(revision) is not None
            except Exception:
                known = False
            if not known:
                raise BackupError(
                    f"{path} was made at database revision {revision}, newer than this Mercato "
                    f"({mercato.__version__}, head {code_head()}); restore it with the release that made it"
                )
        try:
            archive.extractall(work, **_SAFE_EXTRACT)  # noqa: S202 - members checked by _open
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise BackupError(f"{path} is corrupt: {exc}") from exc
        dump = Path(work) / manifest.database_file
        if not dump.is_file() or _sha256(dump) != manifest.database_sha256:
            raise BackupError(f"{path} is corrupt: the database file does not match the manifest's checksum")
        if kind == "sqlite":
            target = sqlite_path(settings)
            _check_sqlite_copy(dump, path)
            if _sqlite_in_use(target):
                raise BackupError(
                    f"the database {target} is open in another process (a running mercato serve or worker?); "
                    "stop every Mercato process, then restore"
                )
            has_data = target.exists() and _read_database(settings)[1]
        else:
            has_data = _read_database(settings)[1]
        if has_data and not replace:
            raise NotEmpty(f"the database {_describe(settings)} is not empty; pass --yes to replace its content")
        if kind == "postgresql":
            _check_no_extra_tables(settings, restore, dump)
        if kind == "sqlite":
            _replace_sqlite(dump, target)
        else:
            dsn, env = _libpq(settings)
            options = ["--clean", "--if-exists", "--no-owner", "--single-transaction"]
            _run([restore, *options, f"--dbname={dsn}", str(dump)], env)
        media = _media_root(settings)
        if media is not None:
            _replace_media(Path(work) / MEDIA, media)
    migrated = revision != code_head()
    if migrated:
        asyncio.run(migrate.upgrade(settings.database_url))
    return RestoreResult(manifest, migrated)


def _describe(settings: Settings) -> str:
    return make_url(settings.database_url).render_as_string(hide_password=True)


def _check_sqlite_copy(dump: Path, archive: Path) -> None:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{dump}?mode=ro", uri=True)) as conn:
            result = conn.execute("PRAGMA integrity_check").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{archive} is corrupt: its database does not open ({exc})") from exc
    if result is None or result[0] != "ok":
        raise BackupError(f"{archive} is corrupt: the database fails SQLite's integrity check")


#: the "DMS" byte of a WAL database's -shm file (SQLite's unix VFS: 120 + 8 lock bytes): every connection holds a
#: shared lock on it for as long as it is open
_SHM_DMS_BYTE = 128


def _check_no_extra_tables(settings: Settings, pg_restore: str, dump: Path) -> None:
    """Refuse a PostgreSQL restore into a database holding tables the dump lacks (a backup from a release before
    those tables, restored over a newer schema): ``pg_restore --clean`` drops only what the dump holds, so those
    tables would stay, and their foreign keys make the restore fail (or the later migration that creates them).

    Raises:
        BackupError: naming the extra tables and what to do instead.
    """
    listing = subprocess.run(  # noqa: S603 - no shell
        [pg_restore, "--list", str(dump)], capture_output=True, text=True, check=False
    )
    if listing.returncode != 0:
        raise BackupError(f"pg_restore cannot read the archive's dump: {listing.stderr.strip()}")
    dumped = set(re.findall(r"^\d+; \d+ \d+ TABLE public (\S+) ", listing.stdout, flags=re.MULTILINE))

    async def tables() -> set[str]:
        engine = create_async_engine(settings.database_url)
        try:
            async with engine.connect() as conn:
                names: list[str] = await conn.run_sync(lambda sync: inspect(sync).get_table_names(schema="public"))
                return set(names)
        finally:
            await engine.dispose()

    extra = sorted(asyncio.run(tables()) - dumped)
    if extra:
        raise BackupError(
            f"the database {_describe(settings)} has tables this backup does not have ({', '.join(extra)}): it "
            "comes from an older release; restore it into a new, empty database (createdb), which is then migrated"
        )


def _sqlite_in_use(target: Path) -> bool:
    """Whether another process has the WAL database ``target`` open (it holds a shared lock on the ``-shm``
    file's DMS byte). POSIX only; ``False`` where ``fcntl`` is missing or there is no ``-shm`` file. Call it
    while this process has no connection to ``target``: POSIX locks are per process."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    try:
        fd = os.open(target.with_name(target.name + "-shm"), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_BYTE)
        return False
    finally:
        os.close(fd)


def _replace_sqlite(copy: Path, target: Path) -> None:
    """Move ``copy`` over ``target`` atomically; the old ``-wal``/``-shm`` files go first, since SQLite would
    otherwise apply the old database's log to the restored file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.restore")
    shutil.copyfile(copy, staged)
    with open(staged, "rb") as handle:
        os.fsync(handle.fileno())
    for suffix in ("-wal", "-shm", "-journal"):
        target.with_name(target.name + suffix).unlink(missing_ok=True)
    os.replace(staged, target)


def _replace_media(restored: Path, media: Path) -> None:
    """Put the archive's media directory in place of ``media`` (an empty one when the archive has none)."""
    media.parent.mkdir(parents=True, exist_ok=True)
    staged = media.with_name(f".{media.name}.restore")
    shutil.rmtree(staged, ignore_errors=True)
    if restored.is_dir():
        shutil.copytree(restored, staged)
    else:
        staged.mkdir()
    old = media.with_name(f".{media.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if media.exists():
        os.replace(media, old)
    os.replace(staged, media)
    shutil.rmtree(old, ignore_errors=True)
