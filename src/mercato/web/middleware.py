"""One pure-ASGI middleware for what every request needs: request id, security headers, body size limit,
metrics and log context. Pure ASGI (not ``BaseHTTPMiddleware``) keeps the per-request cost low."""

from __future__ import annotations

import ipaddress
import json
import re
import time
import uuid
from functools import lru_cache
from typing import Any

import structlog
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mercato.platform.metrics import Metrics
from mercato.web.problems import PROBLEM_JSON, problem_body
from mercato.web.ratelimit import QUOTA_STATE, Quota

log = structlog.get_logger("mercato.web")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


class _BodyTooLarge(HTTPException):
    """Raised while reading a body past the limit; an ``HTTPException`` so FastAPI's body parser lets it through
    to the problem handlers (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes.")


class RequestContextMiddleware:
    """Adds ``X-Request-ID`` (echoed when the client sent a sane one), security headers (RFC 6797 HSTS when
    TLS is on) and the rate-limit headers of the quota the general limit left in the request state (see
    :mod:`mercato.web.ratelimit`), refuses bodies over ``max_body_bytes`` with 413 problem+json, and records
    Prometheus metrics by route template."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, hsts: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.headers = [*_SECURITY_HEADERS, _HSTS] if hsts else list(_SECURITY_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        extra_headers = [(b"x-request-id", request_id.encode()), *self.headers]
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *extra_headers]
                quota: Quota | None = state.get(QUOTA_STATE)
                if quota is not None:
                    message["headers"].extend(quota.raw_headers())
            await send(message)

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge(self.max_body_bytes)
            return message

        self.metrics.in_flight.inc()
        start = time.perf_counter()
        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                await self._too_large(scope, request_id, send_wrapper)
            else:
                try:
                    await self.app(scope, receive_wrapper, send_wrapper)
                except _BodyTooLarge:
                    if started:
                        raise
                    await self._too_large(scope, request_id, send_wrapper)
                except Exception:
                    log.exception("unhandled_error", path=scope["path"], method=scope["method"])
                    if started:
                        raise
                    await self._send_problem(
                        send_wrapper,
                        scope,
                        request_id,
                        500,
                        "internal-error",
                        "Internal server error",
                        "An unexpected error occurred. Quote the request id when reporting it.",
                    )
        finally:
            self.metrics.in_flight.dec()
            template = route_template(scope) or "<unmatched>"
            method = scope["method"]
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
            self.metrics.requests.labels(method, template, str(status)).inc()
            structlog.contextvars.unbind_contextvars("request_id")

    async def _too_large(self, scope: Scope, request_id: str, send: Send) -> None:
        await self._send_problem(
            send,
            scope,
            request_id,
            413,
            "payload-too-large",
            "Payload too large",
            f"The request body is larger than {self.max_body_bytes} bytes.",
        )

    @staticmethod
    async def _send_problem(
        send: Send, scope: Scope, request_id: str, status: int, code: str, title: str, detail: str
    ) -> None:
        payload = json.dumps(problem_body(request_id, scope["path"], status, code, title, detail)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _incoming_request_id(scope: Scope) -> str | None:
    raw = _header(scope, b"x-request-id")
    if raw is None:
        return None
    value = raw.decode("latin-1")
    return value if _REQUEST_ID.match(value) else None


def _content_length(scope: Scope) -> int | None:
    raw = _header(scope, b"content-length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


@lru_cache(maxsize=32)
def _networks(trusted: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _trusted(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(scope: Scope | Any, trusted_proxies: list[str]) -> str:
    """The client's address: the socket peer, or, when the peer is a trusted proxy (``MERCATO_TRUSTED_PROXIES``:
    addresses or CIDR ranges), the nearest ``X-Forwarded-For`` hop that is not itself a trusted proxy."""
    peer = str(scope["client"][0]) if scope.get("client") else "unknown"
    networks = _networks(tuple(trusted_proxies))
    if not networks or not _trusted(peer, networks):
        return peer
    forwarded = _header(scope, b"x-forwarded-for")
    if not forwarded:
        return peer
    hops = [h.strip() for h in forwarded.decode("latin-1").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return peer


def route_template(scope: Scope) -> str | None:
    """The matched route's full template (``/api/v1/orders/{order_id}/refund``), or None before routing or when
    no route matched. FastAPI puts the route in the scope with its path relative to where it was included, so
    the include prefixes (which hold no parameters) are taken from the concrete path; a template with a
    ``:path`` parameter, whose length varies, gives the concrete path."""
    template = getattr(scope.get("route"), "path_format", None)
    if not isinstance(template, str):
        return None
    path: str = scope["path"]
    if ":path}" in template:
        return path
    parts, template_parts = path.split("/"), template.split("/")
    if len(template_parts) > len(parts):
        return template
    return "/".join(parts[: len(parts) - len(template_parts) + 1]) + template
