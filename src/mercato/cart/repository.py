"""Every cart query, as SQLAlchemy Core statements built once (no ORM objects: a cart add is one of the hottest
writes, and the ORM's unit of work and identity map cost more CPU than its statements; see bench/README.md
"Selling benchmark").

A cart is written under its row lock. :func:`touch` takes it with the ``UPDATE`` itself (PostgreSQL row lock;
SQLite serialises writers with ``BEGIN IMMEDIATE``), :func:`find` with ``SELECT ... FOR UPDATE`` when asked, so a
line's read-modify-write cannot interleave with another request on the same cart. Only carts are locked (one row
per request), so lock order cannot deadlock, except in :func:`mercato.cart.service.merge_guest_cart`, which locks
the guest cart before the user's.

Carts are looked up by a :data:`Key`: ``("user", user_id)`` or ``("token", token_hash)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.cart.models import Cart, CartItem
from mercato.db.queries import run_core

Key = tuple[Literal["user", "token"], Any]

_CARTS = cast(Table, Cart.__table__)
_ITEMS = cast(Table, CartItem.__table__)


@dataclass(frozen=True, slots=True)
class CartHead:
    """A cart row without its lines: the owner (``user_id``, None for a guest cart), the applied coupon code, and
    ``expires_at`` (aware UTC)."""

    id: uuid.UUID
    user_id: uuid.UUID | None
    coupon_code: str | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Line:
    """A cart line: ``quantity`` units (1–100) of a product (``variant_id`` None) or of one of its variants."""

    id: uuid.UUID
    product_id: uuid.UUID
    variant_id: uuid.UUID | None
    quantity: int


_HEAD = (_CARTS.c.id, _CARTS.c.user_id, _CARTS.c.coupon_code, _CARTS.c.expires_at)
_KEY_COLUMNS = {"user": _CARTS.c.user_id, "token": _CARTS.c.token_hash}
_FIND = {kind: select(*_HEAD).where(column == bindparam("key")) for kind, column in _KEY_COLUMNS.items()}
_FIND_LOCKED = {kind: query.with_for_update() for kind, query in _FIND.items()}
_TOUCH = {
    kind: update(_CARTS)
    .where(column == bindparam("key"), _CARTS.c.expires_at > bindparam("now"))
    .values(expires_at=bindparam("expires_at"), updated_at=bindparam("now"))
    .returning(*_HEAD)
    for kind, column in _KEY_COLUMNS.items()
}
_SET_COUPON = (
    update(_CARTS)
    .where(_CARTS.c.id == bindparam("cart_id"))
    .values(coupon_code=bindparam("coupon_code"), updated_at=bindparam("now"))
)
_INSERT_CART = insert(_CARTS)
_LINE_COLUMNS = (_ITEMS.c.id, _ITEMS.c.product_id, _ITEMS.c.variant_id, _ITEMS.c.quantity)
_LINES = (
    select(*_LINE_COLUMNS).where(_ITEMS.c.cart_id == bindparam("cart_id")).order_by(_ITEMS.c.created_at, _ITEMS.c.id)
)
_LINE = select(*_LINE_COLUMNS).where(_ITEMS.c.id == bindparam("item_id"), _ITEMS.c.cart_id == bindparam("cart_id"))
_INSERT_LINES = insert(_ITEMS)
_SET_QUANTITY = update(_ITEMS).where(_ITEMS.c.id == bindparam("item_id")).values(quantity=bindparam("quantity"))
_MOVE_LINE = (
    update(_ITEMS)
    .where(_ITEMS.c.id == bindparam("item_id"))
    .values(cart_id=bindparam("to_cart"), quantity=bindparam("quantity"))
)
_DELETE_LINE = delete(_ITEMS).where(_ITEMS.c.id == bindparam("item_id"))
_CLEAR_LINES = delete(_ITEMS).where(_ITEMS.c.cart_id == bindparam("cart_id"))
_EXPIRED = select(_CARTS.c.id).where(_CARTS.c.expires_at <= bindparam("now")).limit(bindparam("limit"))
_DELETE_LINES_OF = delete(_ITEMS).where(_ITEMS.c.cart_id.in_(bindparam("cart_ids", expanding=True)))
_DELETE_CARTS = delete(_CARTS).where(_CARTS.c.id.in_(bindparam("cart_ids", expanding=True)))


async def find(session: AsyncSession, key: Key, *, lock: bool = False) -> CartHead | None:
    """The cart of ``key`` (expired or not), locked until the transaction ends when ``lock``."""
    row = (await run_core(session, (_FIND_LOCKED if lock else _FIND)[key[0]], {"key": key[1]})).first()
    return CartHead(**row._asdict()) if row is not None else None


async def touch(session: AsyncSession, key: Key, *, now: datetime, expires_at: datetime) -> CartHead | None:
    """Lock the live cart of ``key`` (``expires_at`` after ``now``) and move its ``expires_at``; returns it as it
    is now, or None (nothing changed) when there is no live cart."""
    params = {"key": key[1], "now": now, "expires_at": expires_at}
    row = (await run_core(session, _TOUCH[key[0]], params)).first()
    return CartHead(**row._asdict()) if row is not None else None


async def insert_cart(session: AsyncSession, cart: CartHead, *, token_hash: str | None, now: datetime) -> bool:
    """Insert a new cart. A user's cart is inserted in a savepoint: False when a concurrent request created the
    same user's cart first (the unique constraint refused it; nothing else of the transaction is lost). A guest
    cart's token is new (32 random bytes), so no other request can hold it: it is inserted without the savepoint
    (two statements fewer)."""
    params = {
        "id": cart.id,
        "user_id": cart.user_id,
        "token_hash": token_hash,
        "coupon_code": cart.coupon_code,
        "expires_at": cart.expires_at,
        "created_at": now,
        "updated_at": now,
    }
    if cart.user_id is None:
        await run_core(session, _INSERT_CART, params)
        return True
    try:
        async with session.begin_nested():
            await run_core(session, _INSERT_CART, params)
    except IntegrityError:
        return False
    return True


async def set_coupon(session: AsyncSession, cart_id: uuid.UUID, coupon_code: str | None, *, now: datetime) -> None:
    """Apply ``coupon_code`` to the cart (None removes it)."""
    await run_core(session, _SET_COUPON, {"cart_id": cart_id, "coupon_code": coupon_code, "now": now})


async def lines(session: AsyncSession, cart_id: uuid.UUID) -> list[Line]:
    """The cart's lines in cart order (the order they were first added)."""
    return [Line(**row._asdict()) for row in await run_core(session, _LINES, {"cart_id": cart_id})]


async def line(session: AsyncSession, cart_id: uuid.UUID, item_id: uuid.UUID) -> Line | None:
    """The line ``item_id`` if it belongs to cart ``cart_id`` (None for another cart's line)."""
    row = (await run_core(session, _LINE, {"item_id": item_id, "cart_id": cart_id})).first()
    return Line(**row._asdict()) if row is not None else None


async def insert_lines(session: AsyncSession, cart_id: uuid.UUID, new: Sequence[tuple[Line, datetime]]) -> None:
    """Insert new lines ``(line, created_at)`` into the cart (``created_at`` orders the cart)."""
    rows = [
        {
            "id": item.id,
            "cart_id": cart_id,
            "product_id": item.product_id,
            "variant_id": item.variant_id,
            "quantity": item.quantity,
            "created_at": created_at,
        }
        for item, created_at in new
    ]
    if rows:
        await run_core(session, _INSERT_LINES, rows)


async def set_quantities(session: AsyncSession, changes: Sequence[tuple[uuid.UUID, int]]) -> None:
    """Set the quantity of each line ``(item_id, quantity)``."""
    if changes:
        await run_core(session, _SET_QUANTITY, [{"item_id": item_id, "quantity": n} for item_id, n in changes])


async def move_line(session: AsyncSession, item_id: uuid.UUID, *, to_cart: uuid.UUID, quantity: int) -> None:
    """Move a line to another cart (keeping its place in cart order) with ``quantity`` units."""
    await run_core(session, _MOVE_LINE, {"item_id": item_id, "to_cart": to_cart, "quantity": quantity})


async def delete_line(session: AsyncSession, item_id: uuid.UUID) -> None:
    """Delete one line."""
    await run_core(session, _DELETE_LINE, {"item_id": item_id})


async def clear_lines(session: AsyncSession, cart_id: uuid.UUID) -> None:
    """Delete every line of the cart."""
    await run_core(session, _CLEAR_LINES, {"cart_id": cart_id})


async def delete_cart(session: AsyncSession, cart_id: uuid.UUID) -> None:
    """Delete the cart and its lines."""
    await delete_carts(session, [cart_id])


async def expired(session: AsyncSession, *, now: datetime, limit: int) -> list[uuid.UUID]:
    """Ids of up to ``limit`` carts whose ``expires_at`` is not after ``now`` (``ix_carts_expires_at``)."""
    return list((await run_core(session, _EXPIRED, {"now": now, "limit": limit})).scalars())


async def delete_carts(session: AsyncSession, cart_ids: Sequence[uuid.UUID]) -> None:
    """Delete the carts ``cart_ids`` and their lines."""
    if cart_ids:
        await run_core(session, _DELETE_LINES_OF, {"cart_ids": list(cart_ids)})
        await run_core(session, _DELETE_CARTS, {"cart_ids": list(cart_ids)})
