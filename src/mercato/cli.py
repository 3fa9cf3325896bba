"""The ``mercato`` command: serve, migrate, worker, create-admin, check, version, seed, import, backup, restore."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer
import uvicorn

import mercato
from mercato.config import Settings, UnsafeSettings

app = typer.Typer(help="Mercato, an e-commerce backend.", no_args_is_help=True, add_completion=False)


def _migrations() -> ModuleType:
    """``mercato.db.migrate``, imported on use: the server process itself never loads Alembic."""
    from mercato.db import migrate

    return migrate


def _settings() -> Settings:
    try:
        return Settings.load()
    except UnsafeSettings as exc:
        typer.secho(f"Refusing to start: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def _prepare_sqlite_dir(settings: Settings) -> None:
    if settings.sqlite_file is not None:
        settings.sqlite_file.absolute().parent.mkdir(parents=True, exist_ok=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes (use PostgreSQL + Redis for > 1).")] = 1,
    demo: Annotated[bool, typer.Option(help="Load the demo store before accepting requests.")] = False,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
) -> None:
    """Migrate the database (and load the demo store), then serve the API (Swagger UI at /docs).

    Migrating and loading run in a child process (``mercato migrate`` / ``mercato seed --demo``), so the server
    never holds Alembic, the migration scripts or the demo data in memory (about 10 MB of RSS less).
    """
    settings = _settings()
    _prepare_sqlite_dir(settings)
    setup = [sys.executable, "-m", "mercato", *(["seed", "--demo"] if demo else ["migrate"])]
    done = subprocess.run(setup, check=False)  # noqa: S603 - our own command, no shell
    if done.returncode != 0:
        raise typer.Exit(done.returncode)
    ssl = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)} if settings.tls else {}
    uvicorn.run(
        "mercato.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers if not reload else None,
        reload=reload,
        server_header=False,
        log_config=None,
        # believe X-Forwarded-Proto/-For (for Link URLs and client IPs) only from MERCATO_TRUSTED_PROXIES
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        **ssl,  # type: ignore[arg-type]
    )


@app.command("migrate")
def migrate_cmd() -> None:
    """Apply every pending database migration."""
    settings = _settings()
    _prepare_sqlite_dir(settings)
    asyncio.run(_migrations().upgrade(settings.database_url))
    typer.echo("database is up to date")


@app.command()
def worker() -> None:
    """Run background jobs in this process until interrupted (for deployments that serve with run_jobs off)."""
    from mercato.platform.context import Services
    from mercato.platform.logging import configure_logging

    settings = _settings()
    configure_logging(json=settings.env == "production")

    async def run() -> None:
        services = Services.build(settings)
        await _migrations().upgrade(settings.database_url)
        services.jobs.start()
        try:
            await asyncio.Event().wait()  # run until interrupted
        finally:
            await services.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="The admin's email.")],
    password: Annotated[str | None, typer.Option(help="At least 8 characters; prompted for when omitted.")] = None,
) -> None:
    """Create an admin account (exits with an error if the email is taken or the password is weak)."""
    from mercato.identity.bootstrap import CreateAdminError, create_admin_account

    settings = _settings()
    _prepare_sqlite_dir(settings)
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        asyncio.run(create_admin_account(settings, email, password))
    except CreateAdminError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"admin {email.lower()} created")


@app.command()
def check() -> None:
    """Check configuration, database and Redis reachability, and every domain's data invariants."""
    from mercato.checks import all_checks
    from mercato.platform.context import Services

    settings = _settings()

    async def run() -> list[str]:
        services = Services.build(settings)
        problems: list[str] = []
        try:
            try:
                await services.db.ping()
            except Exception as exc:
                return [f"database unreachable: {exc}"]
            try:
                await services.cache.ping()
            except Exception as exc:
                problems.append(f"redis unreachable: {exc}")
            diff = await _migrations().pending_diff(settings.database_url)
            if diff:
                problems.append(
                    f"database schema differs from the models ({len(diff)} differences); run `mercato migrate`"
                )
                return problems
            async with services.db.session(write=False) as session:
                for name, fn in all_checks().items():
                    problems.extend(f"{name}: {violation}" for violation in await fn(session))
        finally:
            await services.close()
        return problems

    problems = asyncio.run(run())
    for problem in problems:
        typer.secho(problem, fg="red")
    if problems:
        raise typer.Exit(1)
    typer.echo("all checks passed")


@app.command()
def version() -> None:
    """Print Mercato's version."""
    typer.echo(mercato.__version__)


@app.command()
def seed(
    demo: Annotated[bool, typer.Option(help="Load the demo store (admin and catalog) if not loaded yet.")] = False,
    scale: Annotated[
        int, typer.Option(min=0, help="Make sure N generated products (GEN-00001...) exist, for benchmarks.")
    ] = 0,
) -> None:
    """Migrate, then load the demo store (--demo) and/or generated products (--scale N). Idempotent."""
    from mercato.demo.loader import load_demo

    if not demo and not scale:
        typer.secho("nothing to seed: pass --demo and/or --scale N", fg="red", err=True)
        raise typer.Exit(2)
    settings = _settings()
    _prepare_sqlite_dir(settings)
    asyncio.run(_migrations().upgrade(settings.database_url))
    if demo:
        try:
            result = asyncio.run(load_demo(settings, scale=scale))
        except RuntimeError as exc:  # refused in production
            typer.secho(str(exc), fg="red", err=True)
            raise typer.Exit(1) from exc
        if result.catalog is None:
            typer.echo("demo catalog already loaded (the catalog is not empty)")
        if (result.catalog and result.catalog.errors) or result.generated.errors:
            raise typer.Exit(1)
    else:
        from mercato.demo.loader import add_generated
        from mercato.platform.context import Services

        async def generate() -> int:
            services = Services.build(settings)
            try:
                report = await add_generated(services, scale)
            finally:
                await services.close()
            typer.echo(f"Generated products: {report.summary()}")
            return len(report.errors)

        if asyncio.run(generate()):
            raise typer.Exit(1)


@app.command()
def backup(
    path: Annotated[
        Path | None,
        typer.Argument(help="Archive to write (default: <data dir>/backups/mercato-<UTC time>.tar.gz)."),
    ] = None,
) -> None:
    """Back up the database and the uploaded media into one .tar.gz archive (mode 0600); safe while serving.

    SQLite is copied with SQLite's online backup API; PostgreSQL with pg_dump --format=custom (pg_dump on PATH).

    The archive also holds <data dir>/media and a manifest.json (version, Alembic revision, database, UTC time).
    Prints the archive's path and size.
    """
    from mercato.platform.backup import BackupError, create_backup

    settings = _settings()
    try:
        written = create_backup(settings, path)
    except BackupError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{written} ({written.stat().st_size} bytes)")


@app.command()
def restore(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A backup archive.")],
    yes: Annotated[bool, typer.Option("--yes", help="Replace a database that holds data.")] = False,
) -> None:
    """Restore a `mercato backup` archive: the database and the uploaded media. Stop every Mercato process first.

    SQLite: the database file is replaced atomically; no server may run meanwhile (it would keep the old file).

    PostgreSQL: pg_restore --clean --if-exists into the configured database (pg_restore must be on PATH).

    A database that holds data is replaced only with --yes. An archive from a newer release is refused; one from
    an older release is migrated afterwards.
    """
    from mercato.platform.backup import BackupError, restore_backup

    settings = _settings()
    _prepare_sqlite_dir(settings)
    try:
        result = restore_backup(settings, path, replace=yes)
    except BackupError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from exc
    asyncio.run(_refresh_statistics(settings))  # a restored PostgreSQL database has no planner statistics yet
    manifest = result.manifest
    typer.echo(
        f"restored the {manifest.database} backup of {manifest.created_at} (Mercato {manifest.mercato_version}, "
        f"{manifest.media_files} media files)" + ("; migrated to this release's schema" if result.migrated else "")
    )


async def _refresh_statistics(settings: Settings) -> None:
    from mercato.db.engine import Database

    database = Database(settings.database_url)
    try:
        await database.refresh_statistics()
    finally:
        await database.dispose()


import_app = typer.Typer(help="Import data from files.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.callback()
def import_group() -> None:
    """Import data from files (see docs/importing.md)."""


@import_app.command("products")
def import_products(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A .json or .csv file.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="json or csv (default: from the file's extension).")
    ] = None,
    update: Annotated[bool, typer.Option(help="Update products whose SKU exists instead of skipping them.")] = False,
) -> None:
    """Import products from JSON or CSV (docs/importing.md). Rows that fail are listed with their row numbers
    and the others are imported; exits 1 if any row failed."""
    from mercato.catalog import importer
    from mercato.platform.context import Services

    if fmt not in (None, "json", "csv"):
        typer.secho("--format must be json or csv", fg="red", err=True)
        raise typer.Exit(2)
    settings = _settings()
    try:
        batch = importer.read_file(file, fmt)
    except importer.ImportFileError as exc:
        typer.secho(f"{file}: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    _prepare_sqlite_dir(settings)

    async def run() -> importer.ImportReport:
        await _migrations().upgrade(settings.database_url)
        services = Services.build(settings)
        try:
            async with services.db.session(write=True) as session:
                report = await importer.run_import(session, batch, update=update)
            if report.created or report.updated:
                await services.db.refresh_statistics()
            return report
        finally:
            await services.close()

    report = asyncio.run(run())
    typer.echo(report.summary())
    for error in report.errors:
        typer.echo(f"row {error.row}{f' (sku {error.sku})' if error.sku else ''}: {error.error}")
    if not report.ok:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry
    """Entry point for ``python -m mercato``."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
