"""Stored idempotency keys (IETF draft-ietf-httpapi-idempotency-key-header): one row per (scope, key).

``scope`` names the caller and the route (e.g. ``user:<id>:POST /api/v1/orders``), ``fingerprint`` is the
SHA-256 of the request body, ``response_*`` hold the first response once it is known (null while in flight).
Rows live 24 hours (``expires_at``). The HTTP behaviour is in :mod:`mercato.web.idempotency`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mercato.db.base import Base, uuid_pk
from mercato.platform import clock


class IdempotencyRecord(Base):
    """The first request made with an ``Idempotency-Key`` and, once finished, its response."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    scope: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    locked_until: Mapped[datetime | None]
    response_status: Mapped[int | None]
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    expires_at: Mapped[datetime] = mapped_column(index=True)
