"""Per-request facts (request id, client ip, acting user or API key) for code far from the router, such as
the audit log.

Set by the auth dependency for each request; empty outside a request (CLI, jobs).
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    """Who is acting and from where."""

    request_id: str | None = None
    ip: str | None = None
    actor_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None


current: ContextVar[RequestContext] = ContextVar("mercato_request_context", default=RequestContext())  # noqa: B039 - frozen
