"""``/api/v1/coupons``: public listing, lookup and validation of coupons; admin creation (one or in bulk), partial
updates and soft deletion (API.md "Coupons").

Who sees what (decided as Stripe and Shopify do it: a code is a shareable secret, its terms are not):
- ``GET /coupons``: everyone gets the public coupons usable now; admins get every coupon, with filters.
- ``GET /coupons/{code}``: anyone who knows a code may read its terms (the public shape, no limits or usage),
  private and not-yet-valid codes included, since ``POST /coupons/{code}/validate`` tells them as much; deleted
  codes are 404 for everyone. Admins get the full shape.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from mercato.cart import service as cart_service
from mercato.cart.deps import CartOwnerDep
from mercato.db.queries import Paged
from mercato.errors import Forbidden, Unauthorized, ValidationFailed
from mercato.identity.principal import Principal
from mercato.platform import clock
from mercato.promotions import service
from mercato.promotions.errors import CouponNotFound, DuplicateCode
from mercato.promotions.models import Coupon
from mercato.promotions.repository import CouponFilter, Status
from mercato.promotions.schemas import (
    CouponBatch,
    CouponBulkCreate,
    CouponCreate,
    CouponPublic,
    CouponRead,
    CouponUpdate,
    CouponValidate,
    CouponValidation,
)
from mercato.web.deps import Admin, OptionalPrincipal, ServicesDep, SessionDep
from mercato.web.pagination import Page, PageDep, page_of
from mercato.web.problems import problems

router = APIRouter(tags=["coupons"])
ADMIN_ONLY = problems(Unauthorized, Forbidden)


def _is_admin(principal: Principal | None) -> bool:
    return principal is not None and principal.is_admin


def _shape(coupon: Coupon, principal: Principal | None, currency: str) -> CouponRead | CouponPublic:
    return CouponRead.of(coupon, currency) if _is_admin(principal) else CouponPublic.of(coupon, currency)


@router.get(
    "/coupons",
    response_model=Page[CouponRead] | Page[CouponPublic],
    responses=problems(Forbidden),
    summary="List coupons",
)
async def list_coupons(
    request: Request,
    response: Response,
    session: SessionDep,
    services: ServicesDep,
    principal: OptionalPrincipal,
    paging: PageDep,
    status_: Annotated[
        Status | None,
        Query(
            alias="status",
            description="Admins only: `active` (usable now), `scheduled`, `expired`, `exhausted` or `deleted`; "
            "default every coupon that is not deleted.",
        ),
    ] = None,
    is_public: Annotated[bool | None, Query(description="Admins only.")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=64, description="Admins only: part of the code.")] = None,
) -> Page[CouponRead] | Page[CouponPublic]:
    """Everyone: the public coupons usable now (started, not expired, not used up, not deleted) in the public
    shape. Admins: every coupon in the full shape (with `used_count`, limits, `deleted_at`), filtered by
    `status`, `is_public` and `q`. Newest first. Filters from anyone else → 403."""
    currency = services.settings.currency
    now = clock.now()
    if _is_admin(principal):
        filters = CouponFilter(status=status_, is_public=is_public, q=q)
        found = await service.list_all(session, filters, now=now, page=paging.page, limit=paging.limit)
        shaped: Paged[object] = Paged(
            [CouponRead.of(c, currency) for c in found.items], found.total, found.page, found.limit
        )
        return page_of(CouponRead, request, response, shaped)
    if status_ is not None or is_public is not None or q is not None:
        raise Forbidden("Only admins may filter coupons.")
    found = await service.list_public(session, now=now, page=paging.page, limit=paging.limit)
    shaped = Paged([CouponPublic.of(c, currency) for c in found.items], found.total, found.page, found.limit)
    return page_of(CouponPublic, request, response, shaped)


@router.post(
    "/coupons",
    status_code=status.HTTP_201_CREATED,
    response_model=CouponRead,
    responses={**ADMIN_ONLY, **problems(DuplicateCode, ValidationFailed)},
    summary="Create a coupon",
)
async def create_coupon(body: CouponCreate, session: SessionDep, services: ServicesDep, _: Admin) -> CouponRead:
    """Admin. The code is stored upper-case and matched case-insensitively. `value`: percent off (0 < value ≤ 100)
    or amount off (> 0), at most two decimals; `expires_at` (exclusive) after `starts_at`. A code already used —
    by a deleted coupon too — is a 409."""
    coupon = await service.create_coupon(session, body)
    return CouponRead.of(coupon, services.settings.currency)


@router.post(
    "/coupons/bulk",
    status_code=status.HTTP_201_CREATED,
    response_model=CouponBatch,
    responses={**ADMIN_ONLY, **problems(DuplicateCode, ValidationFailed)},
    summary="Create many coupons with generated codes",
)
async def create_coupons_in_bulk(body: CouponBulkCreate, session: SessionDep, _: Admin) -> CouponBatch:
    """Admin. `count` (1–1000) coupons with the same terms and unique random codes `PREFIX-XXXX-XXXX` (digits and
    upper-case letters without look-alikes such as 0/O and 1/I). All or nothing."""
    codes = await service.create_bulk(session, body)
    return CouponBatch(count=len(codes), codes=codes)


@router.get(
    "/coupons/{code}",
    response_model=CouponRead | CouponPublic,
    responses=problems(CouponNotFound),
    summary="Get a coupon by code",
)
async def get_coupon(
    code: str, session: SessionDep, services: ServicesDep, principal: OptionalPrincipal
) -> CouponRead | CouponPublic:
    """Case-insensitive code. Anyone who knows a code may read its terms (`CouponPublic`: no limits or usage),
    whether the coupon is public or private, valid now or not — `POST /coupons/{code}/validate` tells as much;
    use it to know whether the code is usable. Admins get the full `CouponRead`. Deleted coupons → 404."""
    coupon = await service.get_coupon(session, code)
    return _shape(coupon, principal, services.settings.currency)


@router.patch(
    "/coupons/{code}",
    response_model=CouponRead,
    responses={**ADMIN_ONLY, **problems(CouponNotFound, ValidationFailed)},
    summary="Update a coupon",
)
@router.put("/coupons/{code}", response_model=CouponRead, include_in_schema=False)
async def update_coupon(
    code: str, body: CouponUpdate, session: SessionDep, services: ServicesDep, _: Admin
) -> CouponRead:
    """Admin. Partial update (`PUT` is an alias): fields left out keep their value; nullable ones may be set to
    null. The code cannot change. `usage_limit` below the uses already counted → 422."""
    coupon = await service.update_coupon(session, code, body)
    return CouponRead.of(coupon, services.settings.currency)


@router.delete(
    "/coupons/{code}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**ADMIN_ONLY, **problems(CouponNotFound)},
    summary="Delete a coupon (soft)",
)
async def delete_coupon(code: str, session: SessionDep, _: Admin) -> None:
    """Admin. The coupon can no longer be read, listed (except with `status=deleted`) or redeemed; its code stays
    taken; uses already counted stay counted (cancelling such an order still gives its use back)."""
    await service.delete_coupon(session, code, now=clock.now())


@router.post(
    "/coupons/{code}/validate",
    response_model=CouponValidation,
    responses=problems(ValidationFailed, Forbidden),
    summary="Check whether a coupon can be used",
)
async def validate_coupon(
    code: str,
    session: SessionDep,
    services: ServicesDep,
    owner: CartOwnerDep,
    body: CouponValidate | None = None,
) -> CouponValidation:
    """Public or signed in. Tries the coupon on `subtotal` (before discount; when omitted or without a body, the
    subtotal of the caller's cart, `0.00` without one — no cart is created) without using it, and answers 200
    `{valid, discount, reason}`: `discount` is what the pricing function takes off; an unusable coupon is
    `valid: false` with `reason` (`not_found`, `not_started`, `expired`, `exhausted`, `per_user_exhausted` for a
    signed-in customer who used up their uses, `below_minimum`), never an error. Guests' per-customer limits are
    counted at checkout, by email."""
    subtotal = body.subtotal if body is not None else None
    if subtotal is None:
        subtotal = await cart_service.cart_subtotal(session, owner)
    result = await service.validate(session, code, subtotal=subtotal, user_id=owner.user_id, now=clock.now())
    return CouponValidation(
        valid=result.valid,
        code=result.code,
        subtotal=result.subtotal,
        discount=result.discount,
        currency=services.settings.currency,
        reason=result.reason,
        detail=result.detail,
    )
