"""Audit queries."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.audit.models import AuditLog
from mercato.db.queries import Paged, paged


async def list_entries(
    session: AsyncSession,
    *,
    actor_id: uuid.UUID | None,
    action: str | None,
    entity_type: str | None,
    entity_id: str | None,
    since: datetime | None,
    until: datetime | None,
    page: int,
    limit: int,
) -> Paged[AuditLog]:
    """Entries matching every given filter, newest first."""
    query = select(AuditLog)
    if actor_id:
        query = query.where(AuditLog.actor_id == actor_id)
    if action:
        query = query.where(AuditLog.action == action)
    if entity_type:
        query = query.where(AuditLog.entity_type == entity_type)
    if entity_id:
        query = query.where(AuditLog.entity_id == entity_id)
    if since:
        query = query.where(AuditLog.created_at >= since)
    if until:
        query = query.where(AuditLog.created_at < until)
    return await paged(session, query.order_by(AuditLog.created_at.desc(), AuditLog.id.desc()), page=page, limit=limit)
