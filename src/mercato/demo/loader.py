"""Loads the demo store. So far it holds the accounts a visitor needs to try the API from /docs: an admin
whose password is generated on first load and written to ``<data dir>/demo-credentials.txt`` (mode 0600).
Loading is idempotent: a second run changes nothing."""

from __future__ import annotations

import os
import secrets

import structlog
from sqlalchemy import select

from mercato.config import Environment, Settings
from mercato.identity.bootstrap import create_admin_account
from mercato.identity.models import Role, User
from mercato.platform.context import Services

DEMO_ADMIN = "admin@demo.mercato.dev"
log = structlog.get_logger("mercato.demo")


async def load_demo(settings: Settings) -> None:
    """Create the demo admin unless an admin already exists. Refused in production."""
    if settings.env is Environment.production:
        raise RuntimeError("the demo store is not loaded in production")
    services = Services.build(settings)
    try:
        async with services.db.session(write=False) as session:
            has_admin = await session.scalar(select(User.id).where(User.role == Role.admin).limit(1))
    finally:
        await services.close()
    if has_admin is not None:
        return
    password = secrets.token_urlsafe(12)
    await create_admin_account(settings, DEMO_ADMIN, password)
    path = settings.data_dir / "demo-credentials.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"email: {DEMO_ADMIN}\npassword: {password}\n")
    print(f"Demo admin: {DEMO_ADMIN} (password in {path})")  # noqa: T201
