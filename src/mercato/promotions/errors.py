"""Promotions' problem types (API.md §1 ``coupon-invalid``, "Coupons")."""

from __future__ import annotations

from typing import Literal

from mercato.errors import Conflict, DomainError, NotFound

#: Why a coupon cannot be used, as the ``reason`` member of a ``coupon-invalid`` problem and of
#: ``POST /coupons/{code}/validate``'s answer.
Reason = Literal["not_found", "not_started", "expired", "exhausted", "per_user_exhausted", "below_minimum"]

REASONS: dict[str, str] = {
    "not_found": "No coupon has this code.",
    "not_started": "This coupon is not valid yet.",
    "expired": "This coupon has expired.",
    "exhausted": "This coupon has been used up.",
    "per_user_exhausted": "You have already used this coupon as many times as it allows.",
    "below_minimum": "The subtotal is below this coupon's minimum purchase.",
}


class CouponInvalid(DomainError):
    """The coupon cannot be used now for this subtotal and customer (422 ``coupon-invalid``). The problem body
    carries the machine-readable ``reason`` (one of :data:`Reason`) next to the human ``detail``."""

    status = 422
    code = "coupon-invalid"
    title = "Coupon not usable"

    def __init__(self, reason: Reason, detail: str | None = None) -> None:
        super().__init__(detail or REASONS[reason], reason=reason)
        self.reason: Reason = reason


class CouponNotFound(NotFound):
    """No coupon (that is not deleted) has this code."""

    title = "Coupon not found"


class DuplicateCode(Conflict):
    """The code is already used by another coupon (deleted coupons keep their code)."""

    title = "Coupon code already in use"
