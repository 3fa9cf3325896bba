"""``GET /api/v1/admin/audit-logs``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from mercato.audit import repository
from mercato.audit.schemas import AuditLogRead
from mercato.schemas import Instant
from mercato.web.deps import Admin, SessionDep
from mercato.web.pagination import Page, PageDep, page_of

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/audit-logs", response_model=Page[AuditLogRead], summary="Audit log")
async def audit_logs(
    request: Request,
    response: Response,
    session: SessionDep,
    _: Admin,
    paging: PageDep,
    actor_id: uuid.UUID | None = None,
    action: Annotated[str | None, Query(max_length=100, examples=["user.role_changed"])] = None,
    entity_type: Annotated[str | None, Query(max_length=50)] = None,
    entity_id: Annotated[str | None, Query(max_length=64)] = None,
    from_: Annotated[Instant | None, Query(alias="from")] = None,
    to: Instant | None = None,
) -> Page[AuditLogRead]:
    """Newest first; every filter is optional (`from` inclusive, `to` exclusive, RFC 3339)."""
    found = await repository.list_entries(
        session,
        actor_id=actor_id,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        since=from_,
        until=to,
        page=paging.page,
        limit=paging.limit,
    )
    return page_of(AuditLogRead, request, response, found)
