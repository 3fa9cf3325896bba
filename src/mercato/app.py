"""``create_app(settings) -> FastAPI``: routers, middleware, lifespan. Nothing else."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

import mercato
from mercato.audit.router import router as audit_router
from mercato.cart.router import router as cart_router
from mercato.catalog.images_router import mount_media
from mercato.catalog.images_router import router as catalog_images_router
from mercato.catalog.router import router as catalog_router
from mercato.catalog.search_router import router as catalog_search_router
from mercato.config import Environment, Settings
from mercato.identity import passwords
from mercato.identity.oidc_router import router as oidc_router
from mercato.identity.router import router as auth_router
from mercato.identity.users_router import admin_router as admin_users_router
from mercato.identity.users_router import router as users_router
from mercato.inventory.router import router as inventory_router
from mercato.orders.router import admin_router as admin_orders_router
from mercato.orders.router import router as orders_router
from mercato.orders.workflow_router import router as order_workflow_router
from mercato.payments.router import order_refunds_router
from mercato.payments.router import router as payments_router
from mercato.platform.context import Services
from mercato.platform.logging import configure_logging
from mercato.promotions.router import router as promotions_router
from mercato.shipping.router import router as shipping_router
from mercato.web import health
from mercato.web.deps import general_rate_limit
from mercato.web.middleware import RequestContextMiddleware
from mercato.web.params import refuse_nul
from mercato.web.problems import PROBLEM_BASE, install_problem_handlers
from mercato.web.routing import include_flat

DESCRIPTION = """Mercato's HTTP API. Errors are RFC 9457 problem details (`application/problem+json`); lists use
the `{data, pagination}` envelope with an RFC 8288 `Link` header; money is a decimal string."""


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    """Build the ASGI application.

    Args:
        settings: configuration; read from the environment when omitted.
        services: prebuilt collaborators (tests share one set per database); built from ``settings`` otherwise.
    """
    settings = settings or Settings.load()
    services = services or Services.build(settings)
    passwords.configure(memory_kib=settings.password_hash_memory_kib, time_cost=settings.password_hash_time_cost)
    configure_logging(json=settings.env is Environment.production, level="DEBUG" if settings.debug else "INFO")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.started = time.monotonic()
        if settings.run_jobs:
            services.jobs.start()
        try:
            yield
        finally:
            await services.close()

    app = FastAPI(
        title="Mercato",
        version=mercato.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        debug=settings.debug,
        # metrics are Prometheus' job (/metrics); FastAPI's own telemetry costs every request an env lookup
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    app.state.started = time.monotonic()
    install_problem_handlers(app)

    include_flat(app.router, health.router)
    # Routes are matched in order, one by one: the shop's busiest (catalog reads, cart, checkout) come first.
    # No path of one router is matched by another's pattern, so the order changes nothing else (tested).
    for router in (
        catalog_search_router,
        catalog_router,
        cart_router,
        orders_router,
        order_workflow_router,
        order_refunds_router,
        payments_router,
        shipping_router,
        promotions_router,
        auth_router,
        oidc_router,
        users_router,
        catalog_images_router,
        inventory_router,
        admin_users_router,
        admin_orders_router,
        audit_router,
        health.api_router,
    ):
        # refuse_nul: a NUL in a query or path parameter is a 422 (bodies refuse it in RequestModel)
        include_flat(
            app.router, router, prefix="/api/v1", dependencies=[Depends(general_rate_limit), Depends(refuse_nul)]
        )
    mount_media(app, settings)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials and "*" not in settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Link", "RateLimit", "RateLimit-Policy", "Retry-After", "ETag"],
        )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=services.metrics,
        max_body_bytes=settings.max_body_bytes,
        hsts=settings.tls,
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "request_id": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object"}},
        },
        "example": {
            "type": PROBLEM_BASE + "not-found",
            "title": "Not found",
            "status": 404,
            "detail": "No such user.",
            "instance": "/api/v1/users/0190...",
            "request_id": "5f2c...",
        },
    }
    app.openapi_schema = schema
    return schema
