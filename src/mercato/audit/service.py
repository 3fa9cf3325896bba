"""Record audit entries: ``await audit_service.record(session, "user.role_changed", "user", user.id, {...})``."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.audit.models import AuditLog
from mercato.platform import clock, request_context


def record(
    session: AsyncSession,
    action: str,
    entity_type: str,
    entity_id: uuid.UUID | str | None,
    changes: dict[str, Any] | None = None,
    *,
    actor_id: uuid.UUID | None = None,
) -> AuditLog:
    """Add an audit row to the caller's transaction.

    Args:
        action: dotted verb, e.g. ``user.deleted``.
        entity_type / entity_id: what was touched.
        changes: JSON-safe description, e.g. ``{"role": ["customer", "admin"]}`` (old, new). Never secrets.
        actor_id: defaults to the user acting in the current request (an API key used for it goes in
            ``api_key_id``).
    Returns:
        The pending :class:`AuditLog` row.
    """
    ctx = request_context.current.get()
    entry = AuditLog(
        id=clock.new_id(),
        actor_id=actor_id or ctx.actor_id,
        api_key_id=None if actor_id else ctx.api_key_id,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id) if entity_id is not None else None,
        changes=changes or {},
        ip=ctx.ip,
        request_id=ctx.request_id,
        created_at=clock.now(),
    )
    session.add(entry)
    return entry
