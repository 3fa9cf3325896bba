"""``/health`` (static, no I/O), ``/ready`` (database and Redis answer), ``/api/v1/status`` and ``/metrics``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import mercato
from mercato.web.deps import ServicesDep

router = APIRouter(tags=["health"])
api_router = APIRouter(tags=["health"])

_HEALTH = b'{"status":"ok"}'


@router.get(
    "/health",
    summary="Liveness",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def health() -> Response:
    """Always 200 while the process serves requests; touches nothing."""
    return Response(_HEALTH, media_type="application/json")


@router.get("/ready", summary="Readiness", responses={503: {"description": "A dependency does not answer"}})
async def ready(services: ServicesDep) -> JSONResponse:
    """200 when the database (and Redis, when configured) answer; 503 otherwise."""
    checks = await _checks(services)
    ok = all(value == "ok" for value in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(services: ServicesDep) -> Response:
    """Request counts and latency histograms per route template, requests in flight, cache hits, job queue
    depth, database connections in use (Prometheus text format)."""
    pool = services.db.engine.pool
    services.metrics.db_pool_checked_out.set(getattr(pool, "checkedout", lambda: 0)())
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@api_router.get("/status", summary="Service status")
async def status(request: Request, services: ServicesDep) -> dict[str, object]:
    """`{version, uptime_s, database, cache, queue, pending_requests}`."""
    checks = await _checks(services)
    try:
        pending = await services.jobs.pending()
        queue = "ok"
    except Exception:
        pending, queue = -1, "unavailable"
    return {
        "version": mercato.__version__,
        "uptime_s": round(time.monotonic() - request.app.state.started, 3),
        "database": checks["database"],
        "cache": checks.get("redis", "memory"),
        "queue": queue,
        "pending_jobs": pending,
        "pending_requests": int(services.metrics.in_flight._value.get()),
    }


async def _checks(services: ServicesDep) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        await services.db.ping()
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unavailable"
    if services.settings.redis_url:
        try:
            await services.cache.ping()
            checks["redis"] = "ok"
        except Exception:
            checks["redis"] = "unavailable"
    return checks
