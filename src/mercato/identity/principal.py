"""Who is making a request: a signed-in user (by bearer token or cookie) or an API key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from mercato.identity.models import Role


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``user_id``/``session_id`` are set for users, ``api_key_id`` for API keys (which act with ``role`` and have
    no user). ``user`` is the cached :class:`~mercato.identity.schemas.UserRead` data of a user. ``via_cookie``
    marks cookie authentication, which needs the CSRF header on unsafe methods.
    """

    role: Role
    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    user: dict[str, Any] = field(default_factory=dict)
    via_cookie: bool = False

    @property
    def is_admin(self) -> bool:
        """Admins may do everything."""
        return self.role is Role.admin

    def may(self, *roles: Role) -> bool:
        """True when the principal is an admin or holds one of ``roles``."""
        return self.is_admin or self.role in roles
