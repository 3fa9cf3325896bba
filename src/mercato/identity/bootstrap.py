"""Creating accounts outside HTTP: ``mercato create-admin`` and the demo store's accounts."""

from __future__ import annotations

from mercato.config import Settings
from mercato.db import migrate
from mercato.identity import passwords, repository, rules
from mercato.identity.models import Role, User
from mercato.platform import clock
from mercato.platform.context import Services


class CreateAdminError(Exception):
    """The admin cannot be created (email taken, weak password, bad email)."""


async def create_admin_account(settings: Settings, email: str, password: str) -> User:
    """Migrate if needed and insert a verified admin.

    Raises:
        CreateAdminError: with a message naming the problem.
    """
    email = email.strip().lower()
    if "@" not in email or len(email) > 320:
        raise CreateAdminError(f"{email!r} is not an email address")
    problem = rules.password_problem(password, email)
    if problem:
        raise CreateAdminError(problem)
    await migrate.upgrade(settings.database_url)
    password_hash = await passwords.hash_password(password)
    services = Services.build(settings)
    try:
        async with services.db.session(write=True) as session:
            if await repository.email_exists(session, email):
                raise CreateAdminError(f"an account with email {email} already exists")
            now = clock.now()
            user = User(
                id=clock.new_id(),
                email=email,
                password_hash=password_hash,
                role=Role.admin,
                email_verified=True,
                created_at=now,
                updated_at=now,
            )
            session.add(user)
        return user
    finally:
        await services.close()
