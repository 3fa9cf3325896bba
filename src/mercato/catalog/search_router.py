"""``GET /api/v1/products/search`` and ``GET /api/v1/products/{id}/similar`` (API.md "Catalog").

Registered before the catalog router, so that ``/products/search`` is not read as a product id or slug. Public
answers are cached per catalog generation like ``GET /products`` and carry an ``ETag`` (``If-None-Match`` →
304).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from mercato.catalog import cache, repository, search
from mercato.catalog import service as catalog_service
from mercato.catalog.errors import ProductNotFound
from mercato.catalog.router import MoneyQuery, product_filters
from mercato.catalog.schemas import ProductRead
from mercato.errors import Forbidden, NotFound, ValidationFailed
from mercato.identity.models import Role
from mercato.identity.principal import Principal
from mercato.web.conditional import json_response
from mercato.web.deps import OptionalPrincipal, ServicesDep, SessionDep
from mercato.web.pagination import Page, PageDep, link_header
from mercato.web.problems import problems

router = APIRouter(tags=["catalog"], route_class=cache.CachedReadRoute)

SearchMode = Literal["keyword", "semantic", "hybrid"]
SearchSort = Literal[
    "relevance",
    "price",
    "-price",
    "rating",
    "-rating",
    "popularity",
    "-popularity",
    "created_at",
    "-created_at",
    "name",
    "-name",
]
ALL_STATUSES = ("draft", "active", "inactive", "archived")
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified (`If-None-Match` matched the `ETag`)"}
}
MODE = Query(
    description="`keyword` (full text); `semantic` needs the `semantic` extra (422 without it); `hybrid` "
    "falls back to keyword results without it."
)


async def search_filters(
    category: Annotated[
        str | None, Query(alias="category_id", max_length=300, description="Includes subcategories")
    ] = None,
    min_price: MoneyQuery = None,
    max_price: MoneyQuery = None,
    brand: Annotated[str | None, Query(max_length=120)] = None,
    vendor_id: uuid.UUID | None = None,
    in_stock: bool | None = None,
    status_: Annotated[
        Literal["draft", "active", "inactive", "archived"] | None,
        Query(alias="status", description="Admins and staff only"),
    ] = None,
    sort: Annotated[
        SearchSort, Query(description="`relevance` (best match first) or a field; `-` for descending")
    ] = "relevance",
) -> dict[str, Any]:
    """The list filters of ``GET /products``, checked by :func:`~mercato.catalog.router.product_filters`, with
    ``relevance`` as the default sort, and without ``q`` (search takes it as its query).

    Returns:
        ``product_filters``' dictionary with ``q`` None and ``sort`` as given.

    Raises:
        ValidationFailed: ``min_price`` exceeds ``max_price`` (422).

    Source: API.md "Catalog" (``/products/search``: "list filters apply").
    """
    params = await product_filters(
        category=category,
        min_price=min_price,
        max_price=max_price,
        q=None,
        brand=brand,
        vendor_id=vendor_id,
        in_stock=in_stock,
        status_=status_,
    )
    return {**params, "sort": sort}


SearchFilters = Annotated[dict[str, Any], Depends(search_filters)]


def _check_mode(mode: SearchMode) -> None:
    if mode == "semantic":
        raise ValidationFailed(
            "Semantic search is not available: the `semantic` extra is not installed.", loc=["query", "mode"]
        )


@router.get(
    "/products/search",
    response_model=Page[ProductRead],
    responses={**problems(ValidationFailed, Forbidden, NotFound), **NOT_MODIFIED},
    summary="Search products",
)
@cache.public_read
async def search_products(
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    principal: OptionalPrincipal,
    paging: PageDep,
    filters: SearchFilters,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=200,
            description="Words to find in the name, brand, tags, category or description; each word also "
            "matches as a prefix, and a misspelt word is corrected. No character is search syntax.",
        ),
    ],
    mode: Annotated[SearchMode, MODE] = "keyword",
) -> Response:
    """Full-text search ranked by relevance (name before brand, tags and category, before description), with
    prefix matching and typo tolerance. The list filters of `GET /products` apply, and `sort` may replace
    relevance by a field. Only active products for the public; staff see every status (`status` is for staff
    only: 403 otherwise); an unknown `category_id` is a 404. `mode=semantic` is a 422 unless the `semantic`
    extra is installed; `mode=hybrid` then gives keyword results."""
    _check_mode(mode)
    staff = catalog_service.sees_all_statuses(principal)
    if filters["status"] is not None and not staff:
        raise Forbidden("Only staff may filter by status.")
    if filters["status"]:
        statuses: tuple[str, ...] = (filters["status"],)
    else:
        statuses = ALL_STATUSES if staff else ("active",)
    page, limit = paging.page, paging.limit

    async def build() -> dict[str, Any]:
        product_filter = repository.ProductFilter(
            category_ids=await catalog_service.category_filter(session, filters["category_id"]),
            min_price=filters["min_price"],
            max_price=filters["max_price"],
            brand=filters["brand"],
            vendor_id=filters["vendor_id"],
            in_stock=filters["in_stock"],
            statuses=statuses,
        )
        hits = await search.search(session, q, product_filter, sort=filters["sort"], page=page, limit=limit)
        body, total = await catalog_service.listing_of(
            session, product_filter, hits.ids, total=hits.total, page=page, limit=limit
        )
        return {"body": body, "total": total}

    key = "search:" + repr(sorted({**filters, "q": q, "page": page, "limit": limit}.items()))
    result = await build() if staff else await cache.cached(services, key, build)
    return json_page(request, result["body"], page, limit, result["total"])


@router.get(
    "/products/{product_id}/similar",
    response_model=Page[ProductRead],
    responses={**problems(ProductNotFound, ValidationFailed), **NOT_MODIFIED},
    summary="Products similar to a product",
)
@cache.public_read
async def similar_products(
    product_id: str,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    principal: OptionalPrincipal,
    limit: Annotated[int, Query(ge=1, le=50, description="At most this many products, 1–50.")] = 10,
    mode: Annotated[SearchMode, MODE] = "keyword",
) -> Response:
    """Active products of the same category, most shared tags first (then best-selling); for a product without
    a category, the products that share a tag with it. `{product_id}` may be the slug. `mode=semantic` is a
    422 unless the `semantic` extra is installed; `mode=hybrid` then gives these keyword neighbours."""
    _check_mode(mode)

    async def build() -> dict[str, Any]:
        product = await catalog_service.get_product(session, principal, product_id)
        ids = await search.similar(session, product, limit=limit)
        body, total = await catalog_service.listing_of(
            session, repository.ProductFilter(), ids, total=None, page=1, limit=limit
        )
        return {"body": body, "total": total}

    key = f"similar:{product_id}:{limit}"
    result = await build() if _private_view(principal) else await cache.cached(services, key, build)
    return json_page(request, result["body"], 1, limit, result["total"])


def _private_view(principal: Principal | None) -> bool:
    """Staff, and vendors (who may see their own drafts), get uncached answers."""
    return catalog_service.sees_all_statuses(principal) or (principal is not None and principal.role is Role.vendor)


def json_page(request: Request, body: bytes, page: int, limit: int, total: int) -> Response:
    """The JSON page with its ``ETag`` (304 on ``If-None-Match``) and ``Link`` header.

    Args:
        request: the request (its ``If-None-Match`` and URL).
        body: the serialised ``Page``.
        page, limit, total: where the page sits, for the ``Link`` header.

    Returns:
        A 200 JSON response, or a 304 without a body.

    Source: API.md §1 (lists send ``Link``; catalog lists send ``ETag`` and honour ``If-None-Match``).
    """
    return json_response(request, body, headers=link_header(request, page, limit, total))
