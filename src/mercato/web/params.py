"""``refuse_nul``: query and path parameters must not contain NUL (``%00``), as request bodies may not
(``mercato.schemas.RequestModel``): PostgreSQL refuses NUL in text, so such a value would be a 500 there."""

from __future__ import annotations

from fastapi import Request

from mercato.errors import ValidationFailed


async def refuse_nul(request: Request) -> None:
    """A dependency of every ``/api/v1`` route (``app.py``), run before the route's own: a 422 when a query
    parameter (name or value) or a path parameter holds NUL, naming it (``loc`` ``["query", name]`` or
    ``["path", name]``).

    Raises:
        ValidationFailed: the first parameter found with ``\\x00``.
    """
    if "\x00" in request.scope["path"]:
        for name, value in request.path_params.items():
            if isinstance(value, str) and "\x00" in value:
                raise ValidationFailed(f"{name} must not contain the NUL character.", loc=["path", name])
    if b"%00" in request.scope["query_string"]:
        for name, value in request.query_params.multi_items():
            if "\x00" in name or "\x00" in value:
                raise ValidationFailed(f"{name} must not contain the NUL character.", loc=["query", name])
