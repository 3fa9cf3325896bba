"""RFC 9457 problem details for every error the API returns.

One renderer (:func:`problem_response`) and the exception handlers that map domain errors, request validation,
malformed JSON, routing errors (404/405) and unexpected exceptions (500, logged, never a trace in the body).
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from mercato.errors import DomainError, RateLimited, ServiceUnavailable

PROBLEM_BASE = "https://mercato.dev/problems/"
PROBLEM_JSON = "application/problem+json"
#: seconds a client is asked to wait when the database is too busy to take its write (503)
BUSY_RETRY_AFTER = 1
#: PostgreSQL SQLSTATEs of a transaction rolled back for a conflict with a concurrent one: deadlock_detected,
#: serialization_failure. Retrying the request is the cure (PostgreSQL manual, "Serialization Failure Handling").
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
log = structlog.get_logger("mercato.web")

_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Validation failed"),
    429: ("rate-limited", "Too many requests"),
    503: ("service-unavailable", "Service unavailable"),
}


def problem_body(
    request_id: str | None, path: str, status: int, code: str, title: str, detail: str, **extra: Any
) -> dict[str, Any]:
    """Build the problem object: ``type``, ``title``, ``status``, ``detail``, ``instance``, ``request_id``, extras."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": path,
        "request_id": request_id,
    }
    body.update(extra)
    return body


def problem_response(
    request: Request,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Render a problem as ``application/problem+json`` with the given status."""
    body = problem_body(
        getattr(request.state, "request_id", None), request.url.path, status, code, title, detail, **extra
    )
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited | ServiceUnavailable) else None
    return problem_response(request, exc.status, exc.code, exc.title, exc.detail, headers, **exc.extra)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    malformed = False
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            malformed = True
        errors.append({"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")})
    detail = "The request body is not valid JSON." if malformed else _summary(errors)
    return problem_response(request, 422, "validation-error", "Validation failed", detail, errors=errors)


def _summary(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _HTTP_SLUGS.get(exc.status_code, ("error", "Error"))
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else title
    return problem_response(request, exc.status_code, code, title, detail, dict(exc.headers or {}))


def database_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that waited the whole busy timeout: SQLite giving up on its write lock
    ("database is locked", another process held it) or this process's writer queue (the pool's timeout)."""
    return isinstance(exc, PoolTimeout) or (isinstance(exc, OperationalError) and "database is locked" in str(exc.orig))


def transaction_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL rolling the transaction back for a concurrent one: a deadlock it detected
    (``40P01``) or a serialization failure (``40001``), as asyncpg raises them wrapped by SQLAlchemy in a
    ``DBAPIError`` whose ``orig`` carries the ``sqlstate``."""
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return sqlstate in RETRYABLE_SQLSTATES


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """SQLite's "database is locked" (the busy timeout ran out while other writers held the lock, i.e. overload)
    and PostgreSQL's deadlock or serialization failure (:func:`transaction_conflict`) are a 503
    ``service-unavailable`` with ``Retry-After``; the request changed nothing (its transaction was rolled back).
    Any other database error stays an unexpected one (500, logged by the middleware)."""
    if database_locked(exc):
        log.warning("database_busy", path=request.url.path, method=request.method)
        detail = "The database is busy with other writes; nothing was changed. Retry shortly."
    elif transaction_conflict(exc):
        log.warning("database_conflict", path=request.url.path, method=request.method)
        detail = "The request collided with a concurrent one; nothing was changed. Retry shortly."
    else:
        raise exc
    return problem_response(
        request, 503, "service-unavailable", "Service unavailable", detail, {"Retry-After": str(BUSY_RETRY_AFTER)}
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app`` so that every error leaves as problem+json (unexpected exceptions are
    turned into a 500 ``internal-error`` by :class:`~mercato.web.middleware.RequestContextMiddleware`)."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)  # OperationalError (SQLite busy) is one
    app.add_exception_handler(PoolTimeout, _database_error)


def problems(*errors: type[DomainError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given domain errors (grouped by status)."""
    out: dict[int | str, dict[str, Any]] = {}
    for err in errors:
        entry = out.setdefault(err.status, {"description": "", "content": {PROBLEM_JSON: {"schema": _SCHEMA}}})
        title = f"{err.title} (`{err.code}`)"
        entry["description"] = f"{entry['description']}; {title}" if entry["description"] else title
    return out


_SCHEMA: dict[str, Any] = {"$ref": "#/components/schemas/Problem"}
