"""``Idempotency-Key`` for unsafe requests (API.md §1 "Idempotency", IETF draft-ietf-httpapi-idempotency-key-header).

A router takes :data:`IdempotencyDep` and wraps its service call::

    @router.post("/orders", status_code=201, response_model=OrderRead, responses=problems(...) | idempotency.RESPONSES)
    async def place_order(body: OrderCreate, session: SessionDep, idem: IdempotencyDep) -> Response:
        return await idem.run(session, lambda: service.place_order(session, body), status_code=201, model=OrderRead)

Rules (what clients see):

- No ``Idempotency-Key`` header: the handler just runs. An empty key or one longer than 255 characters → 422
  ``validation-error`` naming the header. The draft's quoted form (``"abc"``) is accepted and means ``abc``.
- **Scope** (a key belongs to one caller on one route): ``user:<user id>`` for signed-in users, ``api-key:<id>``
  for API keys, ``guest:<SHA-256 of the mercato_cart cookie>`` for guests with a cart cookie, else
  ``ip:<client IP>``; followed by the method and the route template (``POST /api/v1/orders/{order_id}/refund``).
- **Fingerprint**: SHA-256 of the method, the concrete path and query, and the canonical JSON of the body (keys
  sorted, no whitespace), so key order and formatting do not matter but reusing a key on another order does.
- Same key + same fingerprint, finished (2xx) → the stored status, body and headers (``Content-Type``,
  ``Location``, ``ETag``...) replayed with ``Idempotent-Replayed: true``, for 24 hours.
- Same key + different fingerprint → 422 ``idempotency-mismatch``. Same key while the first request still runs →
  409 ``idempotency-conflict`` with ``Retry-After``. A claim left unfinished for 60 s (its request died) is taken
  over by the next request with the key, which runs the handler again.
- Stored bodies are sealed (Fernet: AES-128-CBC + HMAC-SHA256) with a key derived from ``MERCATO_SECRET_KEY`` for
  this purpose only (HKDF, :func:`mercato.platform.keys.fernet`): a first response may hold a secret shown
  once — a guest's ``order_token`` from ``POST /orders`` — and whoever can read the database must not lift it from
  the store. The replay opens the seal, so the same caller still gets the token again. A body sealed under an
  earlier secret key cannot be opened: its replay is a 409 ``conflict`` (the request was done; look its result up).
- Only successes are stored. When the handler raises (a :class:`~mercato.errors.DomainError` such as 409
  ``insufficient-stock``, or an unexpected error) the claim is released and the error returned, so the client
  may fix the cause and retry with the same key. Stripe stores 4xx answers too; the draft leaves it open; we
  release because our 4xx answers change nothing (the request's transaction rolls back), so re-running is safe
  and a key never stays bound to a transient refusal such as missing stock.

Transactions: the claim is committed in its own short write transaction *before* the handler runs (visible to
concurrent duplicates), and the response is stored through the request's session, in the same transaction as the
handler's changes. On SQLite a request whose session already holds the write lock (it ran a statement before
:meth:`Idempotency.run`) claims inside that transaction instead: SQLite serialises writers, so duplicates wait
and then see the finished key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Annotated, Any

import structlog
from cryptography.fernet import InvalidToken
from fastapi import Depends, Header, Request, Response
from fastapi.encoders import jsonable_encoder
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.errors import Conflict, DomainError, ValidationFailed
from mercato.platform import idempotency as store
from mercato.platform.context import Services
from mercato.platform.idempotency import Claim, IdempotencyConflict, IdempotencyMismatch, StoredResponse
from mercato.platform.keys import fernet
from mercato.web.deps import OptionalPrincipal
from mercato.web.middleware import client_ip, route_template
from mercato.web.problems import problem_response, problems

__all__ = [
    "RESPONSES",
    "Idempotency",
    "IdempotencyConflict",
    "IdempotencyDep",
    "IdempotencyMismatch",
    "ResponseUnreadable",
    "get_idempotency",
]

log = structlog.get_logger("mercato.idempotency")
HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
CART_COOKIE = "mercato_cart"
#: The purpose stored response bodies are sealed for (:func:`mercato.platform.keys.fernet`).
SEAL_PURPOSE = "idempotency-responses"
#: Response headers stored with the body and replayed (others, e.g. rate limits or cookies, belong to each call).
STORED_HEADERS = frozenset({"content-type", "location", "content-location", "etag", "last-modified", "link"})


class ResponseUnreadable(Conflict):
    """The key's first response was sealed under an earlier ``MERCATO_SECRET_KEY`` and cannot be replayed (409)."""

    title = "The first response to this idempotency key can no longer be read"


#: OpenAPI ``responses=`` entries for an endpoint that accepts ``Idempotency-Key``: merge into the route's own.
RESPONSES: dict[int | str, dict[str, Any]] = problems(IdempotencyMismatch, IdempotencyConflict, ResponseUnreadable)
RESPONSES[409] = {
    **RESPONSES[409],
    "headers": {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}},
}

Handler = Callable[[], Awaitable[Any]]


class Idempotency:
    """One request's idempotency context (from :data:`IdempotencyDep`); ``key`` is ``None`` without the header.

    Attributes:
        key: the client's key (quotes of the draft's sf-string form removed), or ``None``.
        scope: the caller and route the key belongs to (see the module docstring).
        fingerprint: SHA-256 hex of the request (method, path, query, canonical JSON body).
    """

    def __init__(
        self, request: Request, response: Response, services: Services, key: str | None, scope: str, fingerprint: str
    ) -> None:
        self.request = request
        self.response = response
        self.services = services
        self.key = key
        self.scope = scope
        self.fingerprint = fingerprint

    @property
    def reference(self) -> str | None:
        """SHA-256 hex of the key's scope and value, or None without a key: handlers that run outside one
        transaction (:meth:`run_steps`) store it with what they record, so a retry after a failure finds the
        earlier attempt (e.g. a charge whose gateway call timed out) instead of starting a new one."""
        if self.key is None:
            return None
        return hashlib.sha256(f"{self.scope}\n{self.key}".encode()).hexdigest()

    async def run(
        self,
        session: AsyncSession,
        handler: Handler,
        *,
        status_code: int = 200,
        model: Any = None,
    ) -> Response:
        """Run ``handler`` once per key and return its response (or the stored one).

        Args:
            session: the request's write session (``SessionDep``); the handler's changes and the stored response
                commit together in it. Nothing must hold SQLite's write lock in another session.
            handler: an async callable without arguments returning the response content: a Pydantic model, any
                value ``model`` can validate (e.g. an ORM object), plain JSON data, or a ready ``Response``.
            status_code: the success status (e.g. 201), as in the route decorator.
            model: the route's ``response_model``, used to serialise the content exactly as FastAPI would.

        Returns:
            The handler's response, or the stored first response with ``Idempotent-Replayed: true``, or a 409
            ``idempotency-conflict`` problem with ``Retry-After``.

        Raises:
            IdempotencyMismatch: the key was used for a different request (422).
            IdempotencyConflict: this attempt was taken over by a retry while it ran (its changes roll back).
            ResponseUnreadable: the stored first response was sealed under an earlier secret key (409).
            DomainError: whatever the handler raised (the key is released first).
        """
        if self.key is None:
            return self._merge(_render(await handler(), status_code, model))
        in_session = self.services.db.is_sqlite and _holds_connection(session)
        outcome = await self._claim(session if in_session else None)
        if isinstance(outcome, Response):
            await session.rollback()  # answer without committing anything this request did before
            return outcome
        claim = outcome
        try:
            response = _render(await handler(), status_code, model)
        except DomainError as exc:
            await self._release(session, claim, in_session=in_session, keep_session=exc.commit)
            raise
        except Exception:
            await self._release(session, claim, in_session=in_session, keep_session=False)
            raise
        if 200 <= response.status_code < 300:
            await store.finish(
                session,
                claim,
                status=response.status_code,
                headers=self._stored_headers(response),
                body=_seal(self.services.settings.secret, bytes(response.body)),
            )
        else:  # a handler's own non-2xx Response: not stored, the key is free again
            await store.abandon(session, claim)
        return self._merge(response)

    async def run_steps(self, handler: Handler, *, status_code: int = 200, model: Any = None) -> Response:
        """Like :meth:`run`, for money POSTs that must not hold a transaction across a call to the outside world
        (ARCHITECTURE.md): the route takes no ``SessionDep``; ``handler`` runs its own short committed steps
        (``services.db.session(write=True)``: record the attempt, call the gateway, record the result) and the
        response is stored in one more short committed step after it returns.

        The key is claimed (committed) before ``handler`` runs. If the process dies after the handler's last step
        but before the response is stored, the claim goes stale and a retry after 60 s runs ``handler`` again: a
        handler must then find its earlier attempt (e.g. by passing the key to the gateway). When ``handler``
        raises, the key is released (steps it already committed stay committed: the handler is responsible for
        recording what it did). Returns and raises as :meth:`run`.
        """
        if self.key is None:
            return self._merge(_render(await handler(), status_code, model))
        outcome = await self._claim(None)
        if isinstance(outcome, Response):
            return outcome
        claim = outcome
        try:
            response = _render(await handler(), status_code, model)
        except Exception:
            await self._release(None, claim, in_session=False, keep_session=False)
            raise
        async with self.services.db.session(write=True) as session:
            if 200 <= response.status_code < 300:
                await store.finish(
                    session,
                    claim,
                    status=response.status_code,
                    headers=self._stored_headers(response),
                    body=_seal(self.services.settings.secret, bytes(response.body)),
                )
            else:
                await store.abandon(session, claim)
        return self._merge(response)

    async def _claim(self, session: AsyncSession | None) -> Claim | Response:
        """Claim the key (in ``session``, else in its own committed transaction); a ``Response`` (replay or 409
        ``idempotency-conflict`` with ``Retry-After``) when the handler must not run. Raises
        :class:`IdempotencyMismatch` and :class:`ResponseUnreadable`."""
        assert self.key is not None
        try:
            if session is not None:
                outcome = await store.claim_key(session, scope=self.scope, key=self.key, fingerprint=self.fingerprint)
            else:
                outcome = await store.claim_key_committed(
                    self.services.db, scope=self.scope, key=self.key, fingerprint=self.fingerprint
                )
        except IdempotencyConflict as exc:
            retry = {"Retry-After": str(exc.retry_after)}
            problem = problem_response(self.request, exc.status, exc.code, exc.title, exc.detail, retry)
            return self._merge(problem)
        if isinstance(outcome, StoredResponse):
            try:
                body = _unseal(self.services.settings.secret, outcome.body)
            except InvalidToken:
                log.warning("idempotency_response_unreadable", scope=self.scope)
                raise ResponseUnreadable(
                    "The first response to this Idempotency-Key was stored under an earlier secret key and can no "
                    "longer be read. The request was processed: look its result up instead of retrying."
                ) from None
            return self._merge(_replay(outcome, body))
        return outcome

    async def _release(
        self, session: AsyncSession | None, claim: Claim, *, in_session: bool, keep_session: bool
    ) -> None:
        """Free the key after a failed handler, without ever waiting on our own SQLite write lock."""
        try:
            if keep_session and session is not None:  # the error commits the request's transaction: delete in it
                await store.abandon(session, claim)
            elif not in_session:  # roll back first (releases the write lock), then delete the committed claim
                if session is not None:
                    await session.rollback()
                await store.abandon_committed(self.services.db, claim)
            # in_session and rolled back: the claim disappears with the request's transaction
        except Exception:  # the lock expires after store.LOCK anyway
            log.warning("idempotency_release_failed", scope=self.scope, exc_info=True)

    def _stored_headers(self, response: Response) -> dict[str, str]:
        headers = {k.lower(): v for k, v in self.response.headers.items() if k.lower() in STORED_HEADERS}
        headers.update({k.lower(): v for k, v in response.headers.items() if k.lower() in STORED_HEADERS})
        return headers

    def _merge(self, response: Response) -> Response:
        """Add the headers other dependencies set on the request's response (rate limits...): FastAPI drops them
        when an endpoint returns a ``Response`` itself."""
        for name, value in self.response.headers.items():
            if name.lower() not in response.headers and name.lower() != "content-length":
                response.headers.append(name, value)
        return response


def _holds_connection(session: AsyncSession) -> bool:
    """True when ``session`` has started a database transaction (on SQLite: a write session holds the lock)."""
    transaction = session.sync_session.get_transaction()
    return transaction is not None and bool(transaction._connections)


@lru_cache(maxsize=256)
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def _render(content: Any, status_code: int, model: Any) -> Response:
    """Serialise the handler's content as FastAPI would for ``response_model=model``."""
    if isinstance(content, Response):
        return content
    if model is not None:
        adapter = _adapter(model)
        body = adapter.dump_json(adapter.validate_python(content, from_attributes=True), by_alias=True)
    elif hasattr(content, "model_dump_json"):
        body = content.model_dump_json(by_alias=True).encode()
    else:
        body = json.dumps(jsonable_encoder(content), ensure_ascii=False, separators=(",", ":")).encode()
    return Response(content=body, status_code=status_code, media_type="application/json")


def _seal(secret: str, body: bytes) -> bytes:
    """``body`` encrypted and authenticated (a Fernet token, ASCII) under the key derived from the
    server's ``secret``: what the store keeps instead of the response body."""
    return fernet(secret, SEAL_PURPOSE).encrypt(body)


def _unseal(secret: str, sealed: bytes) -> bytes:
    """The body :func:`_seal` sealed. Raises ``cryptography.fernet.InvalidToken`` when it was sealed under another
    secret (or altered)."""
    return fernet(secret, SEAL_PURPOSE).decrypt(sealed)


def _replay(stored: StoredResponse, body: bytes) -> Response:
    """The stored response again (``body`` unsealed), marked ``Idempotent-Replayed: true``."""
    headers = dict(stored.headers)
    media_type = headers.pop("content-type", None)
    response = Response(content=body, status_code=stored.status, media_type=media_type, headers=headers)
    response.headers[REPLAYED] = "true"
    return response


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    """SHA-256 hex of the request: method, path, query string and body. A JSON body is canonicalised first (keys
    sorted, no insignificant whitespace) so that key order and formatting do not matter; another body is hashed
    as sent."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def scope_of(request: Request, principal: Any, client_ip: str) -> str:
    """The key's scope: caller (user, API key, guest cart cookie hash, else IP) + method + route template.

    Scopes longer than 200 characters (the column) are replaced by their SHA-256.
    """
    if principal is not None and principal.user_id is not None:
        caller = f"user:{principal.user_id}"
    elif principal is not None and principal.api_key_id is not None:
        caller = f"api-key:{principal.api_key_id}"
    elif cart := request.cookies.get(CART_COOKIE):
        caller = "guest:" + hashlib.sha256(cart.encode()).hexdigest()
    else:
        caller = f"ip:{client_ip}"
    scope = f"{caller}:{request.method} {route_template(request.scope) or request.url.path}"
    return scope if len(scope) <= 200 else "sha256:" + hashlib.sha256(scope.encode()).hexdigest()


async def get_idempotency(
    request: Request,
    response: Response,
    principal: OptionalPrincipal,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description=(
                "Makes retries of this request safe (IETF draft-ietf-httpapi-idempotency-key-header): a unique "
                "value, 1-255 characters (a UUID is best), scoped to you and this route. Within 24 h, a retry with "
                "the same key and body replays the first response (`Idempotent-Replayed: true`); another body → "
                "422 `idempotency-mismatch`; while the first is still running → 409 `idempotency-conflict`. "
                "Failed requests are not stored: retry them with the same key."
            ),
            examples=["8e03978e-40d5-43e8-bc93-6894a57f9324"],
            openapi_examples={"uuid": {"summary": "A random UUID", "value": "8e03978e-40d5-43e8-bc93-6894a57f9324"}},
            json_schema_extra={"minLength": 1, "maxLength": MAX_KEY_LENGTH},
        ),
    ] = None,
) -> Idempotency:
    """The request's :class:`Idempotency` (use through :data:`IdempotencyDep`).

    Raises:
        ValidationFailed: the key is empty or longer than 255 characters (422, ``loc`` = the header).
    """
    services: Services = request.app.state.services
    key = idempotency_key
    if key is not None:
        key = key.strip()
        if len(key) >= 2 and key.startswith('"') and key.endswith('"'):
            key = key[1:-1]
        if not key:
            raise ValidationFailed(f"The {HEADER} header must not be empty.", loc=["header", HEADER])
        if len(key) > MAX_KEY_LENGTH:
            raise ValidationFailed(
                f"The {HEADER} header must be at most {MAX_KEY_LENGTH} characters.", loc=["header", HEADER]
            )
    if key is None:
        return Idempotency(request, response, services, None, "", "")
    ip = client_ip(request.scope, services.settings.trusted_proxies)
    request_print = fingerprint(request.method, request.url.path, request.url.query, await request.body())
    return Idempotency(request, response, services, key, scope_of(request, principal, ip), request_print)


#: ``idem: IdempotencyDep`` in a route: reads and documents the ``Idempotency-Key`` header.
IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
