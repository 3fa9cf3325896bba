"""``/api/v1/cart``: the caller's cart (API.md "Cart").

Signed-in customers have one cart; anonymous visitors have a guest cart keyed by the httpOnly ``mercato_cart``
cookie (30 days, SameSite=Lax, ``Secure`` under TLS), set by their first write. The cookie is not authentication
and needs no CSRF token; on login or registration the guest cart merges into the user's. A customer only ever
reaches their own cart: another cart's item ids are 404.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from mercato.cart import service
from mercato.cart.deps import CART_COOKIE, CartOwner, CartOwnerDep
from mercato.cart.errors import CartItemNotFound
from mercato.cart.schemas import CartItemAdd, CartItemsAdd, CartItemUpdate, CartRead, CouponApply
from mercato.catalog.errors import ProductNotFound
from mercato.errors import Forbidden, ValidationFailed
from mercato.inventory.errors import InsufficientStock
from mercato.promotions.errors import CouponInvalid
from mercato.shipping.schemas import CountryCode
from mercato.web.deps import ServicesDep, SessionDep
from mercato.web.problems import problems

router = APIRouter(prefix="/cart", tags=["cart"])
ADD_ERRORS = problems(ProductNotFound, ValidationFailed, InsufficientStock, Forbidden)
COOKIE_MAX_AGE = int(service.CART_TTL.total_seconds())


def _shape(cart: service.CartView, services: ServicesDep) -> CartRead:
    return CartRead.of(cart, services.settings.currency)


def _set_cookie(response: Response, services: ServicesDep, token: str | None) -> None:
    """A guest's write (re)sets the ``mercato_cart`` cookie, so that it lives as long as the cart (30 days after
    the last change)."""
    response.headers["Cache-Control"] = "no-store"
    if token is not None:
        settings = services.settings
        response.set_cookie(
            CART_COOKIE,
            token,
            max_age=COOKIE_MAX_AGE,
            httponly=True,
            secure=settings.tls or settings.public_url.startswith("https://"),
            samesite="lax",
            path="/",
        )


def _guest_token(owner: CartOwner) -> str | None:
    return owner.token if owner.user_id is None else None


def _written(change: service.CartChange, response: Response, services: ServicesDep) -> CartRead:
    _set_cookie(response, services, change.guest_token)
    return _shape(change.cart, services)


@router.get("", response_model=CartRead, responses=problems(ValidationFailed), summary="Get my cart")
async def get_cart(
    response: Response,
    session: SessionDep,
    services: ServicesDep,
    owner: CartOwnerDep,
    country: Annotated[
        CountryCode | None,
        Query(description="Destination (ISO 3166-1 alpha-2): fills `shipping_total` and `tax_total`."),
    ] = None,
    region: Annotated[
        str | None, Query(min_length=1, max_length=100, description="State or province, for its tax rate.")
    ] = None,
) -> CartRead:
    """The caller's cart at current catalog prices: the signed-in user's, else the guest cart of the
    `mercato_cart` cookie. Reading creates nothing: without a cart (or after it expired) the answer is an empty
    cart with `id` and `expires_at` null. Lines no longer for sale show `available` 0 with null prices and count
    in no total; a coupon that stopped being usable gives no discount and is explained in `coupon_error`.
    Without `country`, `shipping_total` and `tax_total` are 0; with it (and optionally `region`), they are what an
    order to that destination would charge without choosing a method: the cheapest method that ships there
    (free above its `free_over`, compared with the subtotal after discount; none when the store has no shipping
    methods) and the destination's tax rate on subtotal − discount + shipping. Shipping methods exist but none
    ships to `country` → 422."""
    response.headers["Cache-Control"] = "no-store"
    return _shape(await service.read_cart(session, owner, country=country, region=region), services)


@router.post(
    "/items",
    status_code=status.HTTP_201_CREATED,
    response_model=CartRead,
    responses=ADD_ERRORS,
    summary="Add a product to my cart",
)
async def add_item(
    body: CartItemAdd, response: Response, session: SessionDep, services: ServicesDep, owner: CartOwnerDep
) -> CartRead:
    """Adds 1–100 units; the same product and variant again adds to its line. A product sold by variant needs
    `variant_id` (422). A line never holds more than 100 units (422) or more than are available (409
    `insufficient-stock`, with `available`); nothing changes then. An unknown, inactive or deleted product → 404.
    A guest's first write creates the cart and sets the `mercato_cart` cookie; every change keeps the cart 30
    more days."""
    change = await service.add_items(session, owner, [(body.product_id, body.variant_id, body.quantity)])
    return _written(change, response, services)


@router.post(
    "/items/bulk",
    status_code=status.HTTP_201_CREATED,
    response_model=CartRead,
    responses=ADD_ERRORS,
    summary="Add several products to my cart",
)
async def add_items(
    body: CartItemsAdd, response: Response, session: SessionDep, services: ServicesDep, owner: CartOwnerDep
) -> CartRead:
    """Up to 100 lines with the rules of `POST /cart/items`, all or nothing: if one is refused (404, 409, 422),
    the cart is left as it was. The same product and variant twice counts once with the quantities summed."""
    change = await service.add_items(
        session, owner, [(item.product_id, item.variant_id, item.quantity) for item in body.items]
    )
    return _written(change, response, services)


@router.patch(
    "/items/{item_id}",
    response_model=CartRead,
    responses=problems(CartItemNotFound, ValidationFailed, InsufficientStock, Forbidden),
    summary="Change the quantity of a cart line",
)
@router.put("/items/{item_id}", response_model=CartRead, include_in_schema=False)
async def update_item(
    item_id: uuid.UUID,
    body: CartItemUpdate,
    response: Response,
    session: SessionDep,
    services: ServicesDep,
    owner: CartOwnerDep,
) -> CartRead:
    """Sets the line's quantity, 0–100; 0 removes the line (`PUT` is an alias). More than available → 409
    `insufficient-stock`; a line no longer for sale can only be removed (404). A line that is not in the
    caller's cart → 404."""
    cart = await service.set_quantity(session, owner, item_id, body.quantity)
    _set_cookie(response, services, _guest_token(owner))
    return _shape(cart, services)


@router.delete(
    "/items/{item_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(CartItemNotFound, Forbidden),
    summary="Remove a cart line",
)
async def remove_item(
    item_id: uuid.UUID, response: Response, session: SessionDep, services: ServicesDep, owner: CartOwnerDep
) -> None:
    """Removes the line. A line that is not in the caller's cart → 404."""
    await service.remove_item(session, owner, item_id)
    _set_cookie(response, services, _guest_token(owner))


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, responses=problems(Forbidden), summary="Empty my cart")
async def clear_cart(response: Response, session: SessionDep, services: ServicesDep, owner: CartOwnerDep) -> None:
    """Removes every line and the coupon. The cart itself (and a guest's cookie) stays; without a cart, nothing
    happens."""
    if await service.clear_cart(session, owner):
        _set_cookie(response, services, _guest_token(owner))


@router.post(
    "/apply-coupon",
    response_model=CartRead,
    responses=problems(CouponInvalid, Forbidden),
    summary="Apply a coupon to my cart",
)
async def apply_coupon(
    body: CouponApply, response: Response, session: SessionDep, services: ServicesDep, owner: CartOwnerDep
) -> CartRead:
    """Applies the coupon (case-insensitive code; it replaces any other) and answers the cart with its discount.
    Unknown, not yet valid, expired, used up, used up by this customer, or a subtotal below its minimum → 422
    `coupon-invalid` with `reason` (`not_found`, `not_started`, `expired`, `exhausted`, `per_user_exhausted`,
    `below_minimum`), nothing changed. The coupon is checked again on every read and when the order is placed.
    A guest's first write creates the cart and sets the `mercato_cart` cookie."""
    change = await service.apply_coupon(session, owner, body.code)
    return _written(change, response, services)


@router.delete(
    "/remove-coupon", response_model=CartRead, responses=problems(Forbidden), summary="Remove the coupon from my cart"
)
async def remove_coupon(
    response: Response, session: SessionDep, services: ServicesDep, owner: CartOwnerDep
) -> CartRead:
    """Removes the applied coupon (if any) and answers the cart without a discount."""
    cart = await service.remove_coupon(session, owner)
    _set_cookie(response, services, _guest_token(owner) if cart.id is not None else None)
    return _shape(cart, services)
