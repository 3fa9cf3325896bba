"""``include_flat``: add a router's routes to the app as plain routes.

FastAPI's ``include_router`` (since 0.138) keeps each included router as a nested branch that it walks twice per
request (to match, then to handle), checking on every walk whether the branch changed. With Mercato's ~250 routes
that cost up to ~0.8 ms of CPU per request before the endpoint ran (measured in-process, calling the ASGI app
directly: a path matched by no route, which walks the whole table twice, took 810 µs nested and 470 µs flat; a
route near the front of the flat table costs a few µs to find). Copying the routes into the app's own table,
with the prefix and dependencies an include would add, gives the same routes, the same OpenAPI document and the
same behaviour (``tests/unit/test_routing.py``), matched in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter
from fastapi.params import Depends
from fastapi.routing import APIRoute


def include_flat(
    target: APIRouter, router: APIRouter, *, prefix: str = "", dependencies: Sequence[Depends] = ()
) -> None:
    """Add every route of ``router`` to ``target`` under ``prefix``, each depending first on ``dependencies``.

    Args:
        target: the router that serves the routes (the app's ``app.router``).
        router: a router holding only ``APIRoute``s (its own prefix, tags and dependencies already applied).
        prefix: a path prefix such as ``/api/v1`` (no trailing slash).
        dependencies: dependencies run before the route's own, as ``include_router(dependencies=...)`` does.

    Raises:
        TypeError: ``router`` holds something other than an ``APIRoute`` (a mount, a websocket, another router).
    """
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"include_flat takes API routes only, not {route!r}")
        target.add_api_route(
            prefix + route.path,
            route.endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=route.tags,
            dependencies=[*dependencies, *route.dependencies],
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=route.responses,
            deprecated=route.deprecated,
            methods=route.methods,
            operation_id=route.operation_id,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            route_class_override=type(route),
            callbacks=route.callbacks,
            openapi_extra=route.openapi_extra,
            generate_unique_id_function=route.generate_unique_id_function,
        )
