"""The list envelope of API.md §1: ``{"data": [...], "pagination": {page, limit, total, total_pages}}`` plus an
RFC 8288 ``Link`` header with ``next`` and ``prev``. ``limit`` is 1–100 (default 20) and ``page`` ≥ 1; anything
else is a 422, never a silent clamp."""

from __future__ import annotations

import math
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel

from mercato.db.queries import Paged

T = TypeVar("T")


class PageInfo(BaseModel):
    """Where this page sits: 1-based ``page``, ``limit`` per page, ``total`` rows, ``total_pages``."""

    page: int
    limit: int
    total: int
    total_pages: int


class Page(BaseModel, Generic[T]):
    """A page of a collection."""

    data: list[T]
    pagination: PageInfo


class PageParams(BaseModel):
    """Validated ``page`` and ``limit`` query parameters."""

    page: int
    limit: int


async def page_params(
    page: Annotated[int, Query(ge=1, le=1_000_000, description="1-based page number.")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page, 1–100.")] = 20,
) -> PageParams:
    """Read ``page``/``limit`` (out of range → 422)."""
    return PageParams(page=page, limit=limit)


PageDep = Annotated[PageParams, Depends(page_params)]


def envelope(model: type[T], paged: Paged[object]) -> Page[T]:
    """Validate each row of ``paged`` as ``model`` and wrap them in the list envelope."""
    total_pages = math.ceil(paged.total / paged.limit) if paged.total else 0
    validate = getattr(model, "model_validate")  # noqa: B009
    return Page[model](  # type: ignore[valid-type]
        data=[validate(item) for item in paged.items],
        pagination=PageInfo(page=paged.page, limit=paged.limit, total=paged.total, total_pages=total_pages),
    )


def link_header(request: Request, page: int, limit: int, total: int) -> dict[str, str]:
    """The RFC 8288 ``Link`` header (``next``/``prev``) for a page, or no header when there is neither."""
    total_pages = math.ceil(total / limit) if total else 0
    links = []
    if page < total_pages:
        links.append(f'<{request.url.include_query_params(page=page + 1)}>; rel="next"')
    if page > 1:
        links.append(f'<{request.url.include_query_params(page=min(page - 1, max(total_pages, 1)))}>; rel="prev"')
    return {"Link": ", ".join(links)} if links else {}


def page_of(model: type[T], request: Request, response: Response, paged: Paged[object]) -> Page[T]:
    """:func:`envelope` plus the ``Link`` header set on ``response``."""
    response.headers.update(link_header(request, paged.page, paged.limit, paged.total))
    return envelope(model, paged)
