"""Audit log responses."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from mercato.schemas import ResponseModel


class AuditLogRead(ResponseModel):
    """One audit entry."""

    model_config = ResponseModel.model_config | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01932c90-1111-7cc3-9d1e-3f6a2b1c0d9e",
                    "actor_id": "01932c6f-5a1e-7cc3-9d1e-3f6a2b1c0d9e",
                    "api_key_id": None,
                    "action": "user.role_changed",
                    "entity_type": "user",
                    "entity_id": "01932c70-2222-7cc3-9d1e-3f6a2b1c0d9e",
                    "changes": {"role": ["customer", "sales"]},
                    "ip": "203.0.113.7",
                    "request_id": "5f2c0b6e9a",
                    "created_at": "2026-12-03T10:00:00Z",
                }
            ]
        }
    )

    id: uuid.UUID
    actor_id: uuid.UUID | None
    api_key_id: uuid.UUID | None = Field(description="The API key used, if the action was taken with one")
    action: str
    entity_type: str
    entity_id: str | None
    changes: dict[str, Any]
    ip: str | None
    request_id: str | None
    created_at: datetime
