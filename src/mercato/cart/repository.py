"""Every cart query. Writes to a cart happen under its row lock (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite
serialises writers with ``BEGIN IMMEDIATE``), so a line's read-modify-write cannot interleave with another
request on the same cart. Only carts are locked (one row per request), so lock order cannot deadlock, except in
:func:`mercato.cart.service.merge_guest_cart`, which locks the guest cart before the user's."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import identity_key

from mercato.cart.models import Cart, CartItem
from mercato.db.queries import add_unique

#: Statements built once, with their values as bind parameters (building one costs more CPU than running it).
_CART_OF_USER = select(Cart).where(Cart.user_id == bindparam("user_id", type_=Cart.user_id.type))
_CART_OF_TOKEN = select(Cart).where(Cart.token_hash == bindparam("token_hash"))
_CART_BY_ID = select(Cart).where(Cart.id == bindparam("cart_id", type_=Cart.id.type))
_LOCKED = {query: query.with_for_update() for query in (_CART_OF_USER, _CART_OF_TOKEN, _CART_BY_ID)}
_ITEMS_OF = (
    select(CartItem)
    .where(CartItem.cart_id == bindparam("cart_id", type_=CartItem.cart_id.type))
    .order_by(CartItem.created_at, CartItem.id)
    .execution_options(populate_existing=True)
)
_CLEAR_ITEMS = delete(CartItem).where(CartItem.cart_id == bindparam("cart_id", type_=CartItem.cart_id.type))


async def cart_for_user(session: AsyncSession, user_id: uuid.UUID, *, lock: bool = False) -> Cart | None:
    """The user's cart (expired or not), locked when ``lock``."""
    return await _one(session, _CART_OF_USER, {"user_id": user_id}, lock)


async def cart_for_token(session: AsyncSession, token_hash: str, *, lock: bool = False) -> Cart | None:
    """The guest cart whose cookie hashes to ``token_hash`` (expired or not), locked when ``lock``."""
    return await _one(session, _CART_OF_TOKEN, {"token_hash": token_hash}, lock)


async def cart_by_id(session: AsyncSession, cart_id: uuid.UUID, *, lock: bool = False) -> Cart | None:
    """A cart by id, locked when ``lock``."""
    return await _one(session, _CART_BY_ID, {"cart_id": cart_id}, lock)


def loaded_cart(session: AsyncSession, cart_id: uuid.UUID) -> Cart | None:
    """The cart ``cart_id`` if this session (one transaction) has already loaded it, without a query."""
    cart = session.identity_map.get(identity_key(Cart, cart_id))
    return cart if isinstance(cart, Cart) else None


async def _one(session: AsyncSession, query: Select[Cart], params: dict[str, Any], lock: bool) -> Cart | None:
    result = await session.execute(
        _LOCKED[query] if lock else query, params, execution_options={"populate_existing": True}
    )
    cart: Cart | None = result.scalar_one_or_none()
    return cart


async def add_cart(session: AsyncSession, cart: Cart) -> bool:
    """Insert ``cart`` in a savepoint; False when a concurrent request created the same user's cart first (the
    unique constraint refused it; nothing else of the transaction is lost). A guest cart's token is new (32 random
    bytes), so no other request can hold it: it is inserted without the savepoint (two statements fewer)."""
    if cart.user_id is None:
        session.add(cart)
        await session.flush()
        return True
    return await add_unique(session, cart)


async def items_of(session: AsyncSession, cart_id: uuid.UUID) -> list[CartItem]:
    """The cart's lines in cart order (the order they were first added)."""
    return list((await session.execute(_ITEMS_OF, {"cart_id": cart_id})).scalars())


async def item_of(session: AsyncSession, cart_id: uuid.UUID, item_id: uuid.UUID) -> CartItem | None:
    """The line ``item_id`` if it belongs to cart ``cart_id`` (None for another cart's line)."""
    query = select(CartItem).where(CartItem.id == item_id, CartItem.cart_id == cart_id)
    item: CartItem | None = (await session.execute(query)).scalar_one_or_none()
    return item


def add_item(session: AsyncSession, item: CartItem) -> None:
    """Stage a new line (flushed with the next query or flush)."""
    session.add(item)


async def remove_item(session: AsyncSession, item: CartItem) -> None:
    """Delete one line."""
    await session.delete(item)
    await session.flush()


async def clear_items(session: AsyncSession, cart_id: uuid.UUID) -> None:
    """Delete every line of the cart."""
    await session.flush()
    await session.execute(_CLEAR_ITEMS, {"cart_id": cart_id})


async def delete_cart(session: AsyncSession, cart_id: uuid.UUID) -> None:
    """Delete the cart and its lines."""
    await clear_items(session, cart_id)
    await session.execute(delete(Cart).where(Cart.id == cart_id))
