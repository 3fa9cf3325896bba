"""Conditional requests (RFC 9110 §13): ``ETag`` on JSON bodies, ``If-None-Match`` → 304, ``If-Match`` → 412."""

from __future__ import annotations

import hashlib

from fastapi import Request, Response

from mercato.errors import PreconditionFailed


def etag_of(body: bytes) -> str:
    """A strong entity tag for ``body``."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def _tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _strong_tags(header: str) -> set[str]:
    """The header's strong tags: ``If-Match`` uses the strong comparison (RFC 9110 §8.8.3.2, §13.1.1), under
    which a weak tag (``W/"..."``) never matches, so weak tags are left out."""
    return {tag.strip() for tag in header.split(",") if tag.strip() and not tag.strip().startswith("W/")}


def json_response(request: Request, body: bytes, *, headers: dict[str, str] | None = None) -> Response:
    """A JSON response carrying ``ETag``; 304 without a body when ``If-None-Match`` names the same tag."""
    etag = etag_of(body)
    all_headers = {"ETag": etag, **(headers or {})}
    match = request.headers.get("if-none-match")
    if match and (match.strip() == "*" or etag in _tags(match)):
        return Response(status_code=304, headers=all_headers)
    return Response(body, media_type="application/json", headers=all_headers)


def check_if_match(request: Request, current: bytes) -> None:
    """Raise :class:`PreconditionFailed` when ``If-Match`` is present and names neither ``*`` nor the current
    representation's tag, compared strongly: a weak tag ``W/"..."`` never matches (RFC 9110 §13.1.1)."""
    match = request.headers.get("if-match")
    if match is None or match.strip() == "*":
        return
    if etag_of(current) not in _strong_tags(match):
        raise PreconditionFailed("The product changed since you read it (If-Match does not match its ETag).")
