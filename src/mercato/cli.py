"""The ``mercato`` command: serve, migrate, worker, create-admin, check, version."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer
import uvicorn

import mercato
from mercato.config import Settings, UnsafeSettings
from mercato.db import migrate

app = typer.Typer(help="Mercato, an e-commerce backend.", no_args_is_help=True, add_completion=False)


def _settings() -> Settings:
    try:
        return Settings.load()
    except UnsafeSettings as exc:
        typer.secho(f"Refusing to start: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def _prepare_sqlite_dir(settings: Settings) -> None:
    if settings.is_sqlite and ":///" in settings.database_url:
        path = settings.database_url.split(":///", 1)[1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes (use PostgreSQL + Redis for > 1).")] = 1,
    demo: Annotated[bool, typer.Option(help="Load the demo store before accepting requests.")] = False,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
) -> None:
    """Migrate the database, then serve the API (Swagger UI at /docs)."""
    settings = _settings()
    _prepare_sqlite_dir(settings)
    asyncio.run(migrate.upgrade(settings.database_url))
    if demo:
        from mercato.demo.loader import load_demo

        asyncio.run(load_demo(settings))
    ssl = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)} if settings.tls else {}
    uvicorn.run(
        "mercato.app:create_app", factory=True, host=host, port=port, workers=workers if not reload else None,
        reload=reload, proxy_headers=False, server_header=False, log_config=None, **ssl,  # type: ignore[arg-type]
    )


@app.command("migrate")
def migrate_cmd() -> None:
    """Apply every pending database migration."""
    settings = _settings()
    _prepare_sqlite_dir(settings)
    asyncio.run(migrate.upgrade(settings.database_url))
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
        await migrate.upgrade(settings.database_url)
        services.jobs.start()
        try:
            while True:
                await asyncio.sleep(3600)
        finally:
            await services.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


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
            diff = await migrate.pending_diff(settings.database_url)
            if diff:
                problems.append(f"database schema differs from the models ({len(diff)} differences); run `mercato migrate`")
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


def main() -> None:  # pragma: no cover - console entry
    """Entry point for ``python -m mercato``."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
