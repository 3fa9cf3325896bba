"""Cart use cases (API.md "Cart"): reading a priced cart, adding and changing lines, coupons, and what the other
domains need (:func:`cart_subtotal`, :func:`checkout_lines`, :func:`empty_cart`, :func:`merge_guest_cart`).

Decisions (documented in the OpenAPI descriptions too):
- A cart exists from its owner's first write (adding a line, applying a coupon). Reads never create one: without
  a cart, ``GET /cart`` answers an empty cart with ``id`` and ``expires_at`` null.
- Every change moves ``expires_at`` to 30 days from now; an expired cart counts as gone (reads show an empty
  cart, the next write starts a new one) and the hourly ``cart.sweep`` deletes it (:func:`delete_expired`).
- Lines are priced at current catalog prices by the one pricing function (:func:`mercato.cart.rules.price`).
  A line whose product or variant is no longer for sale stays listed with ``available`` 0 and ``name``, ``sku``,
  ``unit_price`` and ``line_total`` null; it is left out of every total (``item_count`` too) until it is
  removed, and checkout refuses it (404).
- A line holds 1–100 units and never more than are available when it is added or changed (409
  ``insufficient-stock`` otherwise); stock is only reserved when an order is placed.
- An applied coupon that stops being usable (expired, used up, subtotal below its minimum...) gives no discount:
  the cart shows ``coupon`` null and ``coupon_error`` ``{code, reason, detail}`` instead of failing.

Functions take the request's session and write in its transaction, never committing. Amounts are ``Decimal`` in
the store currency with two decimals; times are aware UTC from :mod:`mercato.platform.clock`.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.cart import repository
from mercato.cart import rules as pricing
from mercato.cart.deps import CartOwner, token_hash
from mercato.cart.errors import CartItemNotFound
from mercato.cart.repository import CartHead, Key, Line
from mercato.catalog.units import Unit, UnitKey, require_units, sellable_units
from mercato.errors import ValidationFailed
from mercato.inventory.errors import InsufficientStock
from mercato.platform import clock
from mercato.promotions import service as promotions
from mercato.promotions.errors import CouponInvalid
from mercato.shipping import service as shipping

#: How long a cart lives after its last change (API.md "Cart": the cookie lasts 30 days).
CART_TTL = timedelta(days=30)
#: Most units one line may hold (API.md "Cart": quantity 1–100).
MAX_LINE_QUANTITY = 100
#: How often each job runner deletes expired carts (:func:`delete_expired`), and how many carts per transaction.
SWEEP_EVERY = timedelta(hours=1)
SWEEP_BATCH = 500


# --- what the service returns ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineView:
    """A priced line. For a line no longer for sale, ``name``, ``sku``, ``unit_price`` and ``line_total`` are None
    and ``available`` is 0."""

    id: uuid.UUID
    product_id: uuid.UUID
    variant_id: uuid.UUID | None
    name: str | None
    sku: str | None
    unit_price: Decimal | None
    quantity: int
    line_total: Decimal | None
    available: int


@dataclass(frozen=True)
class AppliedCoupon:
    """The coupon giving the discount: ``type`` ``percentage`` (``value`` percent) or ``fixed`` (an amount)."""

    code: str
    type: str
    value: Decimal


@dataclass(frozen=True)
class CouponError:
    """Why the cart's coupon gives no discount now: ``reason`` as in ``coupon-invalid`` problems."""

    code: str
    reason: str
    detail: str


@dataclass(frozen=True)
class CartView:
    """A cart priced now. ``id``/``expires_at`` are None when the owner has no cart yet. ``item_count`` is the sum
    of the quantities of the lines for sale."""

    id: uuid.UUID | None
    items: list[LineView]
    coupon: AppliedCoupon | None
    coupon_error: CouponError | None
    subtotal: Decimal
    discount_total: Decimal
    shipping_total: Decimal
    tax_total: Decimal
    total: Decimal
    item_count: int
    expires_at: datetime | None


@dataclass(frozen=True)
class CartChange:
    """The cart after a write, and for a guest the cart token the ``mercato_cart`` cookie must carry (new when
    this write created the cart; re-sent on every write so that the cookie lives as long as the cart)."""

    cart: CartView
    guest_token: str | None


@dataclass(frozen=True)
class CheckoutCart:
    """What order placement needs: the cart, its coupon code and its lines ``(product_id, variant_id,
    quantity)`` in cart order."""

    cart_id: uuid.UUID
    coupon_code: str | None
    lines: list[tuple[uuid.UUID, uuid.UUID | None, int]]


EMPTY = CartView(
    id=None,
    items=[],
    coupon=None,
    coupon_error=None,
    subtotal=pricing.ZERO,
    discount_total=pricing.ZERO,
    shipping_total=pricing.ZERO,
    tax_total=pricing.ZERO,
    total=pricing.ZERO,
    item_count=0,
    expires_at=None,
)


# --- reading -----------------------------------------------------------------------------------------------------


async def read_cart(
    session: AsyncSession, owner: CartOwner, *, country: str | None = None, region: str | None = None
) -> CartView:
    """The owner's cart priced now, or :data:`EMPTY` (``id`` None) when there is none or it has expired. With a
    destination ``country`` (ISO 3166-1 alpha-2) and optional ``region``, ``shipping_total`` is the cheapest method
    that ships there and ``tax_total`` the destination's rate, as the order would charge them; without, both are 0.

    Raises:
        ValidationFailed: shipping methods exist but none ships to ``country`` (query parameter ``country``).
    """
    cart = await _live_cart(session, owner, now=clock.now())
    return await _view(session, cart, owner, destination=(country, region) if country else None)


async def cart_subtotal(session: AsyncSession, owner: CartOwner) -> Decimal:
    """The subtotal before discount of the owner's cart at current prices (lines for sale only), ``0.00`` when
    there is no cart. Used by ``POST /coupons/{code}/validate`` without a ``subtotal``."""
    cart = await _live_cart(session, owner, now=clock.now())
    if cart is None:
        return pricing.ZERO
    items = await repository.lines(session, cart.id)
    units = await sellable_units(session, [_key(item) for item in items])
    return pricing.price(_priced_lines(items, units)).subtotal


async def checkout_lines(session: AsyncSession, owner: CartOwner) -> CheckoutCart | None:
    """The owner's cart for order placement, locked until the transaction ends (two checkouts of one cart run one
    after the other); None when there is no cart (or it has expired). Lines are not checked here: the order
    checks them (``require_units``, stock reservation)."""
    cart = await _live_cart(session, owner, now=clock.now(), lock=True)
    if cart is None:
        return None
    items = await repository.lines(session, cart.id)
    return CheckoutCart(
        cart_id=cart.id,
        coupon_code=cart.coupon_code,
        lines=[(item.product_id, item.variant_id, item.quantity) for item in items],
    )


# --- lines -------------------------------------------------------------------------------------------------------


async def add_items(
    session: AsyncSession, owner: CartOwner, wanted: Sequence[tuple[uuid.UUID, uuid.UUID | None, int]]
) -> CartChange:
    """Add ``(product_id, variant_id, quantity)`` lines to the owner's cart (created on the first write), all or
    nothing: a unit already in the cart gets the quantity added to its line; the same unit twice in ``wanted``
    counts once with the quantities summed.

    Raises:
        NotFound: an unknown, inactive or deleted product, or a variant that is not the product's.
        ValidationFailed: a product with variants without ``variant_id``; a line would hold more than 100 units.
        InsufficientStock: a line would hold more units than are available (``product_id``, ``variant_id``,
            ``available`` in the problem).
    """
    summed: dict[UnitKey, int] = {}
    for product_id, variant_id, quantity in wanted:
        summed[(product_id, variant_id)] = summed.get((product_id, variant_id), 0) + quantity
    units = await require_units(session, summed)
    now = clock.now()
    cart, token, created = await _cart_for_write(session, owner, now)
    items = [] if created else await repository.lines(session, cart.id)
    index = {_key(item): position for position, item in enumerate(items)}
    changed: list[tuple[uuid.UUID, int]] = []
    added: list[tuple[Line, datetime]] = []
    for position, (key, quantity) in enumerate(summed.items()):
        at = index.get(key)
        total = quantity + (items[at].quantity if at is not None else 0)
        _check_quantity(total, units[key])
        if at is not None:
            items[at] = Line(items[at].id, key[0], key[1], total)
            changed.append((items[at].id, total))
        else:
            item = Line(clock.new_id(), key[0], key[1], quantity)
            # lines added together keep the order they were given in
            added.append((item, now + timedelta(microseconds=position)))
            items.append(item)
    await repository.set_quantities(session, changed)
    await repository.insert_lines(session, cart.id, added)
    return CartChange(await _view(session, cart, owner, items=items, known=units), token)


async def set_quantity(session: AsyncSession, owner: CartOwner, item_id: uuid.UUID, quantity: int) -> CartView:
    """Set a line's quantity (0 removes it).

    Raises:
        CartItemNotFound: no such line in the owner's cart (another customer's line included).
        NotFound: the line's product or variant is no longer for sale (only 0 is accepted then).
        ValidationFailed: more than 100 units.
        InsufficientStock: more units than are available.
    """
    cart, item = await _owned_item(session, owner, item_id)
    if quantity == 0:
        await repository.delete_line(session, item.id)
    else:
        units = await require_units(session, [_key(item)])
        _check_quantity(quantity, units[_key(item)])
        await repository.set_quantities(session, [(item.id, quantity)])
    return await _view(session, cart, owner)


async def remove_item(session: AsyncSession, owner: CartOwner, item_id: uuid.UUID) -> None:
    """Remove one line. Raises :class:`CartItemNotFound` when the owner's cart has no such line."""
    _, item = await _owned_item(session, owner, item_id)
    await repository.delete_line(session, item.id)


async def clear_cart(session: AsyncSession, owner: CartOwner) -> bool:
    """Remove every line and the coupon of the owner's cart (the cart itself stays, with its id and cookie).
    Returns False (and changes nothing) when there is no cart."""
    now = clock.now()
    cart = await _touch(session, owner, now)
    if cart is None:
        return False
    await repository.clear_lines(session, cart.id)
    await repository.set_coupon(session, cart.id, None, now=now)
    return True


async def empty_cart(session: AsyncSession, cart: CheckoutCart) -> None:
    """Remove all lines and the coupon of the cart an order was just placed from (``cart`` from
    :func:`checkout_lines`, locked in this transaction, so what it read is still true)."""
    await repository.clear_lines(session, cart.cart_id)
    if cart.coupon_code is not None:
        await repository.set_coupon(session, cart.cart_id, None, now=clock.now())


# --- coupons -----------------------------------------------------------------------------------------------------


async def apply_coupon(session: AsyncSession, owner: CartOwner, code: str) -> CartChange:
    """Apply the coupon ``code`` (case-insensitive) to the owner's cart (created on the first write), replacing
    any other. Checked now against the cart's subtotal and, for a signed-in customer, their own uses; a guest's
    per-customer limit is counted at checkout, by email.

    Raises:
        CouponInvalid: ``reason`` ``not_found``, ``not_started``, ``expired``, ``exhausted``,
            ``per_user_exhausted`` or ``below_minimum``; nothing is changed.
    """
    now = clock.now()
    cart, token, created = await _cart_for_write(session, owner, now)
    items = [] if created else await repository.lines(session, cart.id)
    units = await sellable_units(session, [_key(item) for item in items])
    subtotal = pricing.price(_priced_lines(items, units)).subtotal
    coupon = await promotions.check(session, code, subtotal=subtotal, user_id=owner.user_id, email=None, now=now)
    await repository.set_coupon(session, cart.id, coupon.code, now=now)
    cart = CartHead(cart.id, cart.user_id, coupon.code, cart.expires_at)
    return CartChange(await _view(session, cart, owner, items=items, known=units), token)


async def remove_coupon(session: AsyncSession, owner: CartOwner) -> CartView:
    """Remove the coupon of the owner's cart; without a cart, the empty cart (nothing is created)."""
    now = clock.now()
    cart = await _touch(session, owner, now)
    if cart is None:
        return EMPTY
    await repository.set_coupon(session, cart.id, None, now=now)
    return await _view(session, CartHead(cart.id, cart.user_id, None, cart.expires_at), owner)


# --- sign-in and expiry ------------------------------------------------------------------------------------------


async def merge_guest_cart(session: AsyncSession, *, user_id: uuid.UUID, guest_token: str) -> None:
    """At login or registration, move the guest cart of ``guest_token`` (the raw ``mercato_cart`` cookie value)
    into the user's cart (created if needed), then delete the guest cart. Nothing happens when the token names no
    live cart.

    A unit in both carts gets the quantities summed, capped by what is available now and by 100 (never below
    what the user's line already held); a guest line is moved (keeping its place in cart order) with its
    quantity capped the same way, and dropped when nothing of it is available or it is no longer for sale. The
    guest's coupon is kept when the user's cart has none (it is checked again when the cart is read and at
    checkout).
    """
    now = clock.now()
    guest = await repository.find(session, ("token", token_hash(guest_token)), lock=True)
    if guest is None:
        return
    guest_items = await repository.lines(session, guest.id)
    if guest.expires_at <= now or (not guest_items and guest.coupon_code is None):
        await repository.delete_cart(session, guest.id)
        return
    cart, _, created = await _cart_for_write(session, CartOwner(user_id=user_id), now)
    mine = {} if created else {_key(item): item for item in await repository.lines(session, cart.id)}
    units = await sellable_units(session, [_key(item) for item in guest_items])
    summed: list[tuple[uuid.UUID, int]] = []
    for item in guest_items:
        unit = units.get(_key(item))
        cap = min(unit.available, MAX_LINE_QUANTITY) if unit is not None else 0
        line = mine.get(_key(item))
        if line is not None:
            summed.append((line.id, max(line.quantity, min(line.quantity + item.quantity, cap))))
        elif min(item.quantity, cap) > 0:
            await repository.move_line(session, item.id, to_cart=cart.id, quantity=min(item.quantity, cap))
    await repository.set_quantities(session, summed)
    if cart.coupon_code is None and guest.coupon_code is not None:
        await repository.set_coupon(session, cart.id, guest.coupon_code, now=now)
    await repository.delete_cart(session, guest.id)


async def delete_user_cart(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Delete the user's cart and its lines, if any (account deletion)."""
    cart = await repository.find(session, ("user", user_id), lock=True)
    if cart is not None:
        await repository.delete_cart(session, cart.id)


async def delete_expired(session: AsyncSession, *, now: datetime, limit: int) -> int:
    """Delete up to ``limit`` carts that expired by ``now``, with their lines; returns how many. An expired cart is
    never changed again (every write and read treats it as gone, and a write starts a new cart), so deleting it
    races with nothing. Idempotent; the hourly ``cart.sweep`` calls it until fewer than ``limit`` are left."""
    cart_ids = await repository.expired(session, now=now, limit=limit)
    await repository.delete_carts(session, cart_ids)
    return len(cart_ids)


# --- helpers -----------------------------------------------------------------------------------------------------


def _key(item: Line) -> UnitKey:
    return (item.product_id, item.variant_id)


def _owner_key(owner: CartOwner) -> Key | None:
    if owner.user_id is not None:
        return ("user", owner.user_id)
    if owner.token:
        return ("token", token_hash(owner.token))
    return None


async def _live_cart(session: AsyncSession, owner: CartOwner, *, now: datetime, lock: bool = False) -> CartHead | None:
    key = _owner_key(owner)
    cart = await repository.find(session, key, lock=lock) if key is not None else None
    return cart if cart is not None and cart.expires_at > now else None


async def _touch(session: AsyncSession, owner: CartOwner, now: datetime) -> CartHead | None:
    """The owner's live cart, locked, with ``expires_at`` moved 30 days ahead (one statement); None when there is
    none (or it has expired), and then nothing is changed."""
    key = _owner_key(owner)
    return await repository.touch(session, key, now=now, expires_at=now + CART_TTL) if key is not None else None


async def _cart_for_write(session: AsyncSession, owner: CartOwner, now: datetime) -> tuple[CartHead, str | None, bool]:
    """The owner's cart, locked, with ``expires_at`` moved 30 days ahead; created when there is none or it has
    expired. Returns the cart, for a guest the token the cookie must carry, and whether the cart
    was created now (so it has no lines)."""
    guest_token = owner.token if owner.user_id is None else None
    cart = await _touch(session, owner, now)
    if cart is not None:
        return cart, guest_token, False
    key = _owner_key(owner)
    if key is not None and (found := await repository.find(session, key, lock=True)) is not None:
        if found.expires_at > now:
            # a concurrent first write of the same user created it after the touch looked (PostgreSQL: each
            # statement sees what has committed by then); it is locked now
            return await _touch_locked(session, owner, now), None, False
        await repository.delete_cart(session, found.id)  # expired: the next write starts a new cart
    token = None if owner.user_id is not None else secrets.token_urlsafe(32)
    cart = CartHead(id=clock.new_id(), user_id=owner.user_id, coupon_code=None, expires_at=now + CART_TTL)
    if not await repository.insert_cart(
        session, cart, token_hash=token_hash(token) if token is not None else None, now=now
    ):
        # the same user's concurrent first write created it a moment ago
        return await _touch_locked(session, owner, now), None, False
    return cart, token, True


async def _touch_locked(session: AsyncSession, owner: CartOwner, now: datetime) -> CartHead:
    """:func:`_touch` for a live cart known to exist (another transaction committed it, or this one holds its
    lock)."""
    cart = await _touch(session, owner, now)
    assert cart is not None, "a live cart that was just seen is gone"
    return cart


async def _owned_item(session: AsyncSession, owner: CartOwner, item_id: uuid.UUID) -> tuple[CartHead, Line]:
    """The owner's live cart (locked, its expiry moved: the caller changes it) and its line ``item_id``.

    Raises:
        CartItemNotFound: no live cart, or no such line in it (nothing is changed then: the caller's transaction
            rolls back).
    """
    cart = await _touch(session, owner, clock.now())
    item = await repository.line(session, cart.id, item_id) if cart is not None else None
    if cart is None or item is None:
        raise CartItemNotFound(f"Your cart has no item {item_id}.")
    return cart, item


def _check_quantity(quantity: int, unit: Unit) -> None:
    if quantity > MAX_LINE_QUANTITY:
        raise ValidationFailed(
            f"A cart line holds at most {MAX_LINE_QUANTITY} units; this one would hold {quantity}.", field="quantity"
        )
    if quantity > unit.available:
        raise InsufficientStock(
            f"Only {max(unit.available, 0)} of {unit.name} available; the line would hold {quantity}.",
            product_id=str(unit.product_id),
            variant_id=str(unit.variant_id) if unit.variant_id else None,
            available=max(unit.available, 0),
        )


def _priced_lines(items: Sequence[Line], units: dict[UnitKey, Unit]) -> list[pricing.Line]:
    return [pricing.Line(item.id, units[_key(item)].unit_price, item.quantity) for item in items if _key(item) in units]


async def _view(
    session: AsyncSession,
    cart: CartHead | None,
    owner: CartOwner,
    *,
    destination: tuple[str, str | None] | None = None,
    items: list[Line] | None = None,
    known: dict[UnitKey, Unit] | None = None,
) -> CartView:
    """Price ``cart`` now with the one pricing function. Shipping and tax only for a ``(country, region)``
    destination: the cheapest method shipping there (``free_over`` against the subtotal after discount) and the
    destination's tax rate; without one, both are 0. A caller that has just written the cart may pass its lines
    in cart order (``items``) and the units it read in this transaction (``known``), which are not read again."""
    if cart is None:
        return EMPTY
    if items is None:
        items = await repository.lines(session, cart.id)
    keys = [_key(item) for item in items]
    units = {key: known[key] for key in keys if key in known} if known else {}
    if missing := [key for key in keys if key not in units]:
        units |= await sellable_units(session, missing)
    lines = _priced_lines(items, units)
    subtotal = pricing.price(lines).subtotal
    coupon: AppliedCoupon | None = None
    problem: CouponError | None = None
    discount: pricing.Discount | None = None
    if cart.coupon_code is not None:
        try:
            found = await promotions.check(
                session, cart.coupon_code, subtotal=subtotal, user_id=owner.user_id, email=None, now=clock.now()
            )
        except CouponInvalid as exc:
            problem = CouponError(code=cart.coupon_code, reason=exc.reason, detail=exc.detail)
        else:
            discount = promotions.discount_of(found)
            coupon = AppliedCoupon(code=found.code, type=discount.type, value=discount.value)
    totals = pricing.price(lines, discount=discount)
    if destination is not None and lines:
        country, region = destination
        quote = await shipping.quote(
            session,
            country=country,
            units=[(item.product_id, item.variant_id, item.quantity) for item in items if _key(item) in units],
            method_id=None,
            subtotal=totals.subtotal - totals.discount_total,
            known_units=units,
            country_loc=("query", "country"),
        )
        tax_rate = await shipping.tax_rate(session, country, region)
        totals = pricing.price(
            lines, discount=discount, shipping=quote.shipping if quote is not None else None, tax_rate=tax_rate
        )
    priced = {line.key: line for line in totals.lines}
    views = []
    for item in items:
        unit = units.get(_key(item))
        line = priced.get(item.id)
        views.append(
            LineView(
                id=item.id,
                product_id=item.product_id,
                variant_id=item.variant_id,
                name=unit.name if unit else None,
                sku=unit.sku if unit else None,
                unit_price=line.unit_price if line else None,
                quantity=item.quantity,
                line_total=line.line_total if line else None,
                available=max(unit.available, 0) if unit else 0,
            )
        )
    return CartView(
        id=cart.id,
        items=views,
        coupon=coupon,
        coupon_error=problem,
        subtotal=totals.subtotal,
        discount_total=totals.discount_total,
        shipping_total=totals.shipping_total,
        tax_total=totals.tax_total,
        total=totals.total,
        item_count=sum(line.quantity for line in totals.lines),
        expires_at=cart.expires_at,
    )
