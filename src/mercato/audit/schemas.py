"""Audit log responses."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from mercato.schemas import ResponseModel


class AuditLogRead(ResponseModel):
    """One audit entry."""

    id: uuid.UUID
    actor_id: uuid.UUID | None
    action: str
    entity_type: str
    entity_id: str | None
    changes: dict[str, Any]
    ip: str | None
    request_id: str | None
    created_at: datetime
