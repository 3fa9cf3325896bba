"""The app's flat route table: every route is reached by its own paths whatever the order routers are added in,
and the table holds what ``include_router`` would have built."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match

from mercato.web.routing import include_flat


async def test_no_route_is_shadowed_by_an_earlier_one(app: Any) -> None:
    """Routes are tried in order, hot ones first; a path of each route (parameters filled in) must be answered
    by that route, not by an earlier pattern of another router."""
    routes = [route for route in app.router.routes if isinstance(route, APIRoute)]
    assert len(routes) > 100
    for route in routes:
        path = re.sub(r"\{[^}]+\}", "x0", route.path)
        for method in route.methods:
            scope = {"type": "http", "path": path, "method": method, "root_path": ""}
            winner = next(candidate for candidate in app.router.routes if candidate.matches(scope)[0] == Match.FULL)
            assert winner.path == route.path, f"{method} {route.path} is answered by {winner.path}"


async def test_include_flat_matches_include_router() -> None:
    """Prefix, dependencies (the include's first), status, tags and the OpenAPI document are what
    ``include_router`` gives."""
    calls: list[str] = []

    def outer() -> None:
        calls.append("outer")

    def inner() -> None:
        calls.append("inner")

    router = APIRouter(prefix="/things", tags=["things"], dependencies=[Depends(inner)])

    @router.post("/{thing_id}", status_code=201, summary="Make a thing")
    def make(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    nested, flat = FastAPI(), FastAPI()
    nested.include_router(router, prefix="/api", dependencies=[Depends(outer)])
    include_flat(flat.router, router, prefix="/api", dependencies=[Depends(outer)])

    assert flat.openapi() == nested.openapi()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=flat), base_url="http://test") as client:
        made = await client.post("/api/things/7")
        assert (made.status_code, made.json(), calls) == (201, {"id": 7}, ["outer", "inner"])
        assert (await client.get("/api/things/7")).status_code == 405


def test_include_flat_refuses_what_is_not_an_api_route() -> None:
    router = APIRouter()
    router.include_router(APIRouter(prefix="/inner"))
    with pytest.raises(TypeError):
        include_flat(FastAPI().router, router)
