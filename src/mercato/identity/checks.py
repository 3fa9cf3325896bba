"""Identity invariants for ``mercato check``."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.checks import register
from mercato.identity.models import AuthSession, Role, User


@register("identity.roles")
async def unknown_roles(session: AsyncSession) -> list[str]:
    """Every user's role is one of :class:`Role`."""
    rows = await session.execute(select(User.id, User.role).where(User.role.not_in([r.value for r in Role])))
    return [f"user {uid} has unknown role {role!r}" for uid, role in rows]


@register("identity.deleted_users_signed_out")
async def deleted_users_with_live_sessions(session: AsyncSession) -> list[str]:
    """A deleted (anonymised) user has no live session."""
    rows = await session.execute(
        select(User.id, func.count())
        .join(AuthSession, AuthSession.user_id == User.id)
        .where(User.deleted_at.is_not(None), AuthSession.revoked_at.is_(None))
        .group_by(User.id)
    )
    return [f"deleted user {uid} still has {n} live session(s)" for uid, n in rows]


@register("identity.admin_exists")
async def admin_exists(session: AsyncSession) -> list[str]:
    """At least one live admin can manage the store once any account exists."""
    users = await session.scalar(select(func.count()).select_from(User).where(User.deleted_at.is_(None)))
    admins = await session.scalar(
        select(func.count()).select_from(User).where(User.role == Role.admin, User.deleted_at.is_(None))
    )
    if users and not admins:
        return ["no admin account exists; create one with `mercato create-admin`"]
    return []
