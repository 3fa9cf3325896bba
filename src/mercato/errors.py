"""Domain errors: plain exceptions with a stable slug, rendered once as RFC 9457 problem details by ``web``.

Each domain subclasses these in its own ``errors.py``. ``status`` is the HTTP status, ``code`` the slug in
``https://mercato.dev/problems/<code>``, ``title`` a short human summary that does not change between
occurrences; ``detail`` explains this occurrence.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every expected failure. ``extra`` members are added to the problem body."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"
    #: When true, the request's transaction is committed before the error is returned (e.g. a reused refresh
    #: token revokes its session *and* answers 401). False for almost every error: a refusal changes nothing.
    commit: ClassVar[bool] = False

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class Unauthorized(DomainError):
    """No valid credentials (RFC 9110 §15.5.2)."""

    status = 401
    code = "unauthorized"
    title = "Authentication required"


class Forbidden(DomainError):
    """Authenticated but not allowed."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(DomainError):
    """The resource does not exist, or the caller may not know that it does."""

    status = 404
    code = "not-found"
    title = "Not found"


class Conflict(DomainError):
    """The request conflicts with the current state (duplicate, in use...)."""

    status = 409
    code = "conflict"
    title = "Conflict"


class ValidationFailed(DomainError):
    """Input that passed the schema but breaks a rule. ``field`` names the offending body field."""

    status = 422
    code = "validation-error"
    title = "Validation failed"

    def __init__(self, detail: str, *, field: str | None = None, loc: list[str | int] | None = None) -> None:
        location = loc or (["body", field] if field else ["body"])
        super().__init__(detail, errors=[{"loc": location, "msg": detail, "type": "value_error"}])


class RateLimited(DomainError):
    """Too many requests; ``retry_after`` is in whole seconds."""

    status = 429
    code = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ServiceUnavailable(DomainError):
    """A dependency (database, Redis, a gateway) did not answer; the client may retry after ``retry_after``
    whole seconds (the ``Retry-After`` header, RFC 9110 §10.2.3)."""

    status = 503
    code = "service-unavailable"
    title = "Service unavailable"
    retry_after = 5


class PreconditionFailed(DomainError):
    """``If-Match`` does not match the resource's current ``ETag`` (RFC 9110 §13.1.1)."""

    status = 412
    code = "precondition-failed"
    title = "Precondition failed"
