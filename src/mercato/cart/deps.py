"""Who owns the cart a request acts on: the signed-in user, else the guest of the ``mercato_cart`` cookie.

The cookie (API.md §2) is an opaque random token, httpOnly, SameSite=Lax, path ``/``, 30 days; the database keeps
only its SHA-256 (``carts.token_hash``). It is not authentication: it needs no CSRF token, and it only ever
reaches the cart it was issued for.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Cookie, Depends

from mercato.web.deps import OptionalPrincipal

CART_COOKIE = "mercato_cart"
#: Longest cookie value considered; longer values are ignored (ours are 43 characters).
MAX_TOKEN_LENGTH = 128


@dataclass(frozen=True)
class CartOwner:
    """The owner of a cart: a signed-in user (``user_id``), a guest (``token``: the raw ``mercato_cart`` cookie
    value), or neither (an anonymous visitor without a cart yet). ``user_id`` wins when both are known."""

    user_id: uuid.UUID | None = None
    token: str | None = None


def token_hash(token: str) -> str:
    """The SHA-256 of a guest cart token, as 64 lower-case hex characters (``carts.token_hash``)."""
    return hashlib.sha256(token.encode()).hexdigest()


async def cart_owner(
    principal: OptionalPrincipal,
    token: Annotated[str | None, Cookie(alias=CART_COOKIE, include_in_schema=False)] = None,
) -> CartOwner:
    """The caller's :class:`CartOwner`: the signed-in user (an API key has no cart of its own and counts as
    anonymous), else the guest of the ``mercato_cart`` cookie, else an owner with neither. Creates nothing.

    Raises:
        Forbidden: cookie authentication (``mercato_access``) on an unsafe method without the CSRF header.
    """
    if principal is not None and principal.user_id is not None:
        return CartOwner(user_id=principal.user_id)
    if token and len(token) <= MAX_TOKEN_LENGTH:
        return CartOwner(token=token)
    return CartOwner()


CartOwnerDep = Annotated[CartOwner, Depends(cart_owner)]
