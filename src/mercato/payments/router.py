"""``/api/v1/payments`` — paying orders, payment history, refunds, saved cards and gateway callbacks (API.md
"Payments"); ``POST /api/v1/orders/{id}/refund`` lives here too, next to the refund of a payment.

Money POSTs take no request-wide session: they run as short committed steps around the gateway call
(``Idempotency.run_steps``), so no transaction is open while the gateway thinks.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from mercato.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from mercato.identity.models import Role
from mercato.identity.principal import Principal
from mercato.orders.errors import InvalidTransition, OrderNotFound
from mercato.orders.router import OrderToken
from mercato.payments import gateways, service
from mercato.payments.errors import (
    PaymentDeclined,
    PaymentInProgress,
    PaymentMethodNotFound,
    PaymentNotFound,
    RefundFailed,
    RefundNotAllowed,
)
from mercato.payments.gateways.base import GatewayUnavailable, InvalidSignature, MalformedWebhook, UnknownToken
from mercato.payments.schemas import (
    MethodCreate,
    MethodRead,
    PaymentCreate,
    PaymentRead,
    PaymentRefundCreate,
    RefundCreate,
    RefundRead,
    WebhookAck,
)
from mercato.platform.context import Services
from mercato.web import idempotency
from mercato.web.deps import CurrentPrincipal, CurrentUser, OptionalPrincipal, ReadSessionDep, SessionDep, require
from mercato.web.idempotency import IdempotencyDep
from mercato.web.pagination import Page, PageDep, page_of
from mercato.web.problems import problems

router = APIRouter(prefix="/payments", tags=["payments"])
order_refunds_router = APIRouter(prefix="/orders", tags=["payments"])
Admin = Annotated[Principal, Depends(require(Role.admin))]
REFUND_PROBLEMS = problems(Unauthorized, Forbidden, NotFound, RefundNotAllowed, RefundFailed, GatewayUnavailable)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PaymentRead,
    summary="Pay an order",
    description=(
        "Charges the order's total with a saved method (`payment_method_id`) or a one-time gateway token "
        "(`payment_token`; the test gateway takes Stripe's test tokens: `tok_visa`, `tok_mastercard`, "
        "`tok_chargeDeclined`, `tok_chargeDeclinedInsufficientFunds`). Customers pay their own orders, guests "
        "with `X-Order-Token`. Success: the order becomes `processing` and `paid` and its stock is committed. "
        "Declined: 402 `payment-declined`, a `failed` payment is recorded and the order stays payable. Send an "
        "`Idempotency-Key`: a retry never charges twice."
    ),
    responses=problems(
        ValidationFailed, OrderNotFound, InvalidTransition, PaymentInProgress, PaymentDeclined, GatewayUnavailable
    )
    | idempotency.RESPONSES,
)
async def create_payment(
    body: PaymentCreate,
    request: Request,
    principal: OptionalPrincipal,
    idem: IdempotencyDep,
    order_token: OrderToken = None,
) -> Response:
    services = _services(request)

    async def run() -> PaymentRead:
        payment = await service.pay(
            services,
            principal,
            body,
            order_token=order_token,
            request_key=idem.reference,
            request_fingerprint=idem.fingerprint or None,
        )
        return PaymentRead.model_validate(payment)

    return await idem.run_steps(run, status_code=status.HTTP_201_CREATED, model=PaymentRead)


@router.get(
    "",
    response_model=Page[PaymentRead],
    summary="Payment history",
    description="Your payments, newest first (admins: everyone's); `order_id` narrows to one order.",
    responses=problems(Unauthorized),
)
async def list_payments(
    request: Request,
    response: Response,
    session: ReadSessionDep,
    principal: CurrentPrincipal,
    paging: PageDep,
    order_id: Annotated[uuid.UUID | None, Query(description="Only this order's payments")] = None,
) -> Page[PaymentRead]:
    paged = await service.list_payments(session, principal, order_id=order_id, page=paging.page, limit=paging.limit)
    return page_of(PaymentRead, request, response, paged)


@router.get(
    "/methods",
    response_model=Page[MethodRead],
    summary="Your saved cards",
    description="Brand, last four digits and expiry of each saved card, default first.",
    responses=problems(Unauthorized, Forbidden),
)
async def list_methods(
    request: Request, response: Response, session: ReadSessionDep, principal: CurrentUser, paging: PageDep
) -> Page[MethodRead]:
    if principal.user_id is None:
        raise Forbidden("Saved cards belong to a customer account.")
    paged = await service.list_methods(session, principal.user_id, page=paging.page, limit=paging.limit)
    return page_of(MethodRead, request, response, paged)


@router.post(
    "/methods",
    status_code=status.HTTP_201_CREATED,
    response_model=MethodRead,
    summary="Save a card",
    description=(
        "Saves the card behind a gateway token for later payments. Only brand, last4 and expiry are kept, with "
        "the gateway's reusable token encrypted at rest; no card number or CVC ever reaches Mercato."
    ),
    responses=problems(Unauthorized, UnknownToken),
)
async def save_method(request: Request, body: MethodCreate, session: SessionDep, principal: CurrentUser) -> MethodRead:
    services = _services(request)
    if principal.user_id is None:
        raise Forbidden("Saved cards belong to a customer account.")
    card = await gateways.active(services).save(body.payment_token)  # before the transaction's first statement
    return MethodRead.model_validate(await service.save_method(session, services, principal.user_id, body, card))


@router.delete(
    "/methods/{method_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Forget a saved card",
    description="Payments made with it keep their brand and last4.",
    responses=problems(Unauthorized, PaymentMethodNotFound),
)
async def delete_method(method_id: uuid.UUID, session: SessionDep, principal: CurrentUser) -> Response:
    if principal.user_id is None:
        raise PaymentMethodNotFound(f"No saved payment method {method_id}.")
    await service.delete_method(session, principal.user_id, method_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/webhooks/{gateway}",
    response_model=WebhookAck,
    summary="Gateway callbacks",
    description=(
        "For the payment gateway only. The body must carry a valid signature made at most 5 minutes ago (test "
        "gateway: `Mercato-Signature: t=<unix>,v1=<HMAC-SHA256>`; Stripe: `Stripe-Signature`); else 400/401 and "
        "nothing changes. Charge and refund events make Mercato ask the gateway and record what it says; each "
        "event id is applied once."
    ),
    responses=problems(MalformedWebhook, InvalidSignature, NotFound),
)
async def webhook(gateway: str, request: Request) -> WebhookAck:
    services = _services(request)
    try:
        target = gateways.by_name(services, gateway)
    except Exception as exc:
        raise NotFound(f"No payment gateway {gateway!r} here.") from exc
    duplicate = await service.handle_webhook(services, target, await request.body(), request.headers)
    return WebhookAck(duplicate=duplicate)


@router.get(
    "/{payment_id}",
    response_model=PaymentRead,
    summary="Get a payment",
    description="Your own payment, or any for admins.",
    responses=problems(Unauthorized, PaymentNotFound),
)
async def get_payment(payment_id: uuid.UUID, session: ReadSessionDep, principal: CurrentPrincipal) -> PaymentRead:
    return PaymentRead.model_validate(await service.get_payment(session, principal, payment_id))


@router.post(
    "/{payment_id}/refund",
    status_code=status.HTTP_201_CREATED,
    response_model=RefundRead,
    summary="Refund a payment (admin)",
    description=(
        "Gives `amount` (default: all that is left) of the payment back; never more than captured − refunded "
        "(422). The order's `payment_status` becomes `partially_refunded` or `refunded`. `Idempotency-Key` "
        "makes retries safe."
    ),
    responses=REFUND_PROBLEMS | idempotency.RESPONSES,
)
async def refund_payment(
    payment_id: uuid.UUID, body: PaymentRefundCreate, request: Request, principal: Admin, idem: IdempotencyDep
) -> Response:
    services = _services(request)

    async def run() -> RefundRead:
        refund = await service.refund_payment(
            services,
            principal,
            payment_id,
            body.amount,
            body.reason,
            request_key=idem.reference,
            request_fingerprint=idem.fingerprint or None,
        )
        return RefundRead.model_validate(refund)

    return await idem.run_steps(run, status_code=status.HTTP_201_CREATED, model=RefundRead)


@order_refunds_router.post(
    "/{order_id}/refund",
    status_code=status.HTTP_201_CREATED,
    response_model=RefundRead,
    summary="Refund an order (admin)",
    description=(
        "Refunds (part of) what the order's payment captured: `amount` defaults to all that is left; more than "
        "captured − refunded → 422. `restock: true` puts every unit of the order back on hand (once per order, "
        "with an inventory history row). `Idempotency-Key` makes retries safe."
    ),
    responses=REFUND_PROBLEMS | idempotency.RESPONSES,
)
async def refund_order(
    order_id: uuid.UUID, body: RefundCreate, request: Request, principal: Admin, idem: IdempotencyDep
) -> Response:
    services = _services(request)

    async def run() -> RefundRead:
        refund = await service.refund_order(
            services,
            principal,
            order_id,
            body,
            request_key=idem.reference,
            request_fingerprint=idem.fingerprint or None,
        )
        return RefundRead.model_validate(refund)

    return await idem.run_steps(run, status_code=status.HTTP_201_CREATED, model=RefundRead)
