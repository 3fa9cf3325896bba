"""Product search (``GET /products/search``) and similar products (``GET /products/{id}/similar``): ranking,
prefixes, typos, list filters, visibility, the index kept in sync by every write, and hostile input."""

from __future__ import annotations

import random
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mercato.catalog import search
from mercato.catalog.models import Product
from mercato.platform.context import Services
from tests.conftest import bearer, make_admin

P = "/api/v1/products"
SEARCH = f"{P}/search"


@pytest.fixture
async def admin(services: Services, client: httpx.AsyncClient) -> dict[str, str]:
    """The admin's bearer header; the client itself stays anonymous (sign-in cookies dropped)."""
    headers = bearer(await make_admin(services, client))
    client.cookies.clear()
    return headers


async def create(client: httpx.AsyncClient, admin: dict[str, str], name: str, **fields: Any) -> dict[str, Any]:
    body = {"name": name, "price": "10.00", "status": "active", **fields}
    response = await client.post(P, json=body, headers=admin)
    assert response.status_code == 201, response.text
    product: dict[str, Any] = response.json()
    return product


async def category(client: httpx.AsyncClient, admin: dict[str, str], name: str, parent: str | None = None) -> str:
    response = await client.post("/api/v1/categories", json={"name": name, "parent_id": parent}, headers=admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def found(client: httpx.AsyncClient, q: str, headers: dict[str, str] | None = None, **params: Any) -> list[str]:
    """Names of the products found for ``q``, in result order."""
    response = await client.get(SEARCH, params={"q": q, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return [p["name"] for p in response.json()["data"]]


async def product_count(services: Services) -> int:
    async with services.db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(Product)) or 0)


# --- ranking, fields, prefixes, typos -----------------------------------------------------------------------


async def test_name_match_ranks_before_brand_and_tags_before_description(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create(client, admin, "Summer Dress", description="A light dress made of linen and cotton.")
    await create(client, admin, "Beach Towel", tags=["linen", "beach"])
    await create(client, admin, "Straw Cap", brand="Linen")
    await create(client, admin, "Linen Shirt", description="Breezy.")
    await create(client, admin, "Wool Socks", description="Warm.")

    names = await found(client, "linen")

    assert names[0] == "Linen Shirt"
    assert set(names[1:3]) == {"Beach Towel", "Straw Cap"}
    assert names[3:] == ["Summer Dress"]
    response = await client.get(SEARCH, params={"q": "linen"})
    assert response.json()["pagination"] == {"page": 1, "limit": 20, "total": 4, "total_pages": 1}


async def test_brand_tag_category_and_description_words_are_found(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    footwear = await category(client, admin, "Footwear")
    await create(
        client,
        admin,
        "Trail Runner",
        brand="Acme",
        tags=["waterproof", "grip"],
        category_id=footwear,
        description="Made for muddy mountain paths.",
    )
    await create(client, admin, "Tea Kettle", brand="Hearth", description="Whistles when the water boils.")

    for q in [
        "acme",
        "waterproof",
        "footwear",
        "muddy",
        "trail",
        "ACME Footwear",
        "Trail-Runner",
        "runner acme",
    ]:
        assert await found(client, q) == ["Trail Runner"], q
    assert await found(client, "hearth") == ["Tea Kettle"]
    assert await found(client, "acme kettle") == []  # every word must match


async def test_prefixes_match(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(client, admin, "Monospace Tee", brand="Saleor")
    await create(client, admin, "Zip Hoodie")

    assert await found(client, "mono") == ["Monospace Tee"]
    assert await found(client, "Monosp") == ["Monospace Tee"]
    assert await found(client, "hood") == ["Zip Hoodie"]
    assert await found(client, "sal tee") == ["Monospace Tee"]
    assert await found(client, "monospaces") == ["Monospace Tee"]  # one letter too many is a typo


async def test_one_letter_typos_still_find_the_product(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(client, admin, "Monospace Tee", tags=["cotton"])
    await create(client, admin, "Zip Hoodie", tags=["fleece"])
    await create(client, admin, "Canvas Tote")

    assert await found(client, "monospase") == ["Monospace Tee"]
    assert await found(client, "hoodei") == ["Zip Hoodie"]
    assert await found(client, "Monospase tee") == ["Monospace Tee"]
    assert await found(client, "zip hoodei") == ["Zip Hoodie"]
    assert await found(client, "qwxzvk") == []
    assert await found(client, "hoodei tote") == []  # the corrected word must still match with the others


async def test_accents_are_ignored(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(client, admin, "Café Crème Mug")

    assert await found(client, "cafe creme") == ["Café Crème Mug"]
    assert await found(client, "CAFÉ") == ["Café Crème Mug"]


# --- filters, sorting, pages --------------------------------------------------------------------------------


async def test_list_filters_sorting_and_pages_apply(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    clothes = await category(client, admin, "Clothes")
    hats = await category(client, admin, "Hats", parent=clothes)
    home = await category(client, admin, "Home")
    await create(client, admin, "Wool Sock", price="5.00", category_id=clothes, stock=0, brand="Knit")
    await create(client, admin, "Wool Beanie", price="20.00", category_id=hats, stock=3, brand="Knit")
    await create(client, admin, "Wool Blanket", price="60.00", category_id=home, stock=1, brand="Loom")
    await create(client, admin, "Cotton Sheet", price="30.00", category_id=home, stock=9)

    assert await found(client, "wool", category_id=clothes, sort="price") == ["Wool Sock", "Wool Beanie"]
    assert await found(client, "wool", category_id="hats") == ["Wool Beanie"]
    assert await found(client, "wool", min_price="10", sort="price") == ["Wool Beanie", "Wool Blanket"]
    assert await found(client, "wool", max_price="10") == ["Wool Sock"]
    assert await found(client, "wool", in_stock="true", sort="-price") == ["Wool Blanket", "Wool Beanie"]
    assert await found(client, "wool", in_stock="false") == ["Wool Sock"]
    assert await found(client, "wool", brand="knit", sort="name") == ["Wool Beanie", "Wool Sock"]
    assert await found(client, "wool", category_id=home, max_price="50") == []
    first = await client.get(SEARCH, params={"q": "wool", "sort": "price", "limit": 2})
    assert [p["name"] for p in first.json()["data"]] == ["Wool Sock", "Wool Beanie"]
    assert first.json()["pagination"] == {"page": 1, "limit": 2, "total": 3, "total_pages": 2}
    assert 'rel="next"' in first.headers["link"]
    assert await found(client, "wool", sort="price", limit=2, page=2) == ["Wool Blanket"]
    assert await found(client, "wool", sort="relevance", limit=2, page=3) == []
    beyond = await client.get(SEARCH, params={"q": "wool", "limit": 2, "page": 3})  # counted apart from the page
    assert beyond.json()["pagination"] == {"page": 3, "limit": 2, "total": 3, "total_pages": 2}
    assert (await client.get(SEARCH, params={"q": "wool", "category_id": str(uuid.uuid4())})).status_code == 404


async def test_only_live_active_products_are_public(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(client, admin, "Secret Lamp", status="draft")
    await create(client, admin, "Desk Lamp")
    old = await create(client, admin, "Floor Lamp")
    assert (await client.delete(f"{P}/{old['id']}", headers=admin)).status_code == 204

    assert await found(client, "lamp") == ["Desk Lamp"]
    assert await found(client, "secret") == []
    assert (await client.get(SEARCH, params={"q": "lamp", "status": "draft"})).status_code == 403
    assert sorted(await found(client, "lamp", headers=admin)) == ["Desk Lamp", "Secret Lamp"]
    assert await found(client, "lamp", headers=admin, status="draft") == ["Secret Lamp"]

    assert (await client.post(f"{P}/{old['id']}/restore", headers=admin)).status_code == 200
    assert sorted(await found(client, "lamp")) == ["Desk Lamp", "Floor Lamp"]


# --- the index follows every write --------------------------------------------------------------------------


async def test_updates_are_searchable_at_once(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    desk = await create(client, admin, "Walnut Desk", tags=["office"])
    assert await found(client, "walnut") == ["Walnut Desk"]  # also fills the cache

    renamed = await client.patch(f"{P}/{desk['id']}", json={"name": "Oak Desk"}, headers=admin)
    assert renamed.status_code == 200
    assert await found(client, "walnut") == []
    assert await found(client, "oak") == ["Oak Desk"]

    await client.put(f"{P}/{desk['id']}", json={"tags": ["standing"], "description": "Adjustable."}, headers=admin)
    assert await found(client, "office") == []
    assert await found(client, "standing adjustable") == ["Oak Desk"]

    await client.patch(f"{P}/{desk['id']}", json={"status": "draft"}, headers=admin)
    assert await found(client, "oak") == []
    assert await found(client, "oak", headers=admin) == ["Oak Desk"]

    assert (await client.delete(f"{P}/{desk['id']}", headers=admin)).status_code == 204
    assert await found(client, "oak", headers=admin) == []


async def test_bulk_operations_are_indexed(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    kept = await create(client, admin, "Copper Pan", sku="PAN-1")
    response = await client.post(
        f"{P}/bulk",
        headers=admin,
        json={
            "operations": [
                {"op": "create", "data": {"name": "Iron Skillet", "price": "30.00", "status": "active"}},
                {"op": "update", "id": kept["id"], "data": {"name": "Steel Pan"}},
            ]
        },
    )
    assert response.status_code == 200, response.text
    skillet = response.json()["results"][0]["id"]
    assert await found(client, "skillet") == ["Iron Skillet"]
    assert await found(client, "pan") == ["Steel Pan"]
    assert await found(client, "copper") == []

    failing = await client.post(
        f"{P}/bulk",
        headers=admin,
        json={
            "operations": [
                {"op": "delete", "id": skillet},
                {"op": "create", "data": {"name": "Broken", "price": "-1"}},
            ]
        },
    )
    assert failing.status_code == 422
    assert await found(client, "skillet") == ["Iron Skillet"]  # rolled back with the rest
    await client.post(f"{P}/bulk", headers=admin, json={"operations": [{"op": "delete", "id": skillet}]})
    assert await found(client, "skillet") == []


async def test_category_changes_reindex_their_products(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    kitchen = await category(client, admin, "Kitchen")
    tools = await category(client, admin, "Tools")
    await create(client, admin, "Chef Knife", category_id=kitchen)
    assert await found(client, "kitchen") == ["Chef Knife"]

    renamed = await client.patch(f"/api/v1/categories/{kitchen}", json={"name": "Cookware"}, headers=admin)
    assert renamed.status_code == 200
    assert await found(client, "kitchen") == []
    assert await found(client, "cookware") == ["Chef Knife"]

    moved = await client.delete(f"/api/v1/categories/{kitchen}", params={"reassign_to": tools}, headers=admin)
    assert moved.status_code == 204
    assert await found(client, "cookware") == []
    assert await found(client, "tools knife") == ["Chef Knife"]


# --- modes and bad input ------------------------------------------------------------------------------------


async def test_modes(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(client, admin, "Monospace Tee")

    semantic = await client.get(SEARCH, params={"q": "tee", "mode": "semantic"})
    assert semantic.status_code == 422
    assert semantic.headers["content-type"] == "application/problem+json"
    assert semantic.json()["errors"][0]["loc"] == ["query", "mode"]
    assert await found(client, "tee", mode="hybrid") == ["Monospace Tee"]
    assert await found(client, "tee", mode="keyword") == ["Monospace Tee"]
    assert (await client.get(SEARCH, params={"q": "tee", "mode": "vector"})).status_code == 422


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": ""},
        {"q": "x" * 500},
        {"q": "x" * 201},
        {"q": "tee", "limit": 101},
        {"q": "tee", "page": 0},
        {"q": "tee", "sort": "password"},
        {"q": "tee", "min_price": "50", "max_price": "10"},
        {"q": "tee", "in_stock": "maybe"},
    ],
)
async def test_bad_search_parameters_are_422(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await client.get(SEARCH, params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


HOSTILE = [
    '"NEAR(',
    "NEAR(mono tee, 2)",
    "*",
    "mono*",
    "AND OR NOT",
    "NOT mono",
    '"unbalanced',
    'mono"',
    "'",
    "%' OR 1=1 --",
    "'; DROP TABLE products; --",
    "mono) OR (1=1",
    "name:mono",
    "{name description}: mono",
    "^mono",
    "-mono",
    "mono + tee",
    "(((",
    "\\",
    "mono\x00",
    "👕 mono",
    "&|!<->:*",
    "' || pg_sleep(5) || '",
    "ᙕŉ*hoodei",  # unaccent turns ŉ into 'n: punctuation must not reach to_tsquery
    "x" * 200,
]
SYNTAX = [
    *"\"*()^:-+{}[]'\\%_&|!<>~@#$;,.?/=` ",
    "NEAR",
    "AND",
    "OR",
    "NOT",
    "ŉ",
    "ß",
    "İ",
    "ﬁ",
    "\u0300",
    "中文",
]


async def test_hostile_queries_never_fail(client: httpx.AsyncClient, admin: dict[str, str], services: Services) -> None:
    await create(client, admin, "Monospace Tee")
    await create(client, admin, "Hidden Draft", status="draft")
    results = {}
    for q in HOSTILE:
        response = await client.get(SEARCH, params={"q": q})
        if "\x00" in q:  # no request string may hold NUL (PostgreSQL refuses it): 422 naming the parameter
            assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["query", "q"], q
            continue
        assert response.status_code == 200, (q, response.text)
        results[q] = [p["name"] for p in response.json()["data"]]

    for q in ['"NEAR(', "*", "AND OR NOT", "(((", "\\", "'", "&|!<->:*", "%' OR 1=1 --", "x" * 200]:
        assert results[q] == [], q
    for q in ["mono*", 'mono"', "^mono", "-mono", "👕 mono", "mono + tee"]:
        assert results[q] == ["Monospace Tee"], q
    assert await product_count(services) == 2


async def test_random_text_never_fails(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(client, admin, "Monospace Tee", tags=["cotton"])
    rnd = random.Random(2026)
    for _ in range(120):
        parts = [
            rnd.choice(SYNTAX)
            if rnd.random() < 0.5
            else rnd.choice(["mono", "tee", "cotton", "monospase", "x"])
            if rnd.random() < 0.5
            else "".join(chr(rnd.randint(32, 0x2FFF)) for _ in range(rnd.randint(1, 5)))
            for _ in range(rnd.randint(1, 8))
        ]
        q = "".join(parts)[:200]
        response = await client.get(SEARCH, params={"q": q})
        assert response.status_code == 200, (q, response.text)


async def test_search_sends_etag_and_honours_if_none_match(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(client, admin, "Glass Vase")
    first = await client.get(SEARCH, params={"q": "vase"})
    etag = first.headers["etag"]
    assert (await client.get(SEARCH, params={"q": "vase"}, headers={"If-None-Match": etag})).status_code == 304
    await create(client, admin, "Clay Vase")
    second = await client.get(SEARCH, params={"q": "vase", "sort": "name"}, headers={"If-None-Match": etag})
    assert second.status_code == 200
    assert [p["name"] for p in second.json()["data"]] == ["Clay Vase", "Glass Vase"]


async def test_search_route_is_not_a_product_slug(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(client, admin, "Search")  # its slug becomes "search-item"
    response = await client.get(SEARCH, params={"q": "search"})
    assert [p["slug"] for p in response.json()["data"]] == ["search-item"]


# --- similar products ---------------------------------------------------------------------------------------


async def test_similar_products_share_the_category_ranked_by_shared_tags(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    tees = await category(client, admin, "Tees")
    other = await category(client, admin, "Other")
    basic = await create(client, admin, "Basic Tee", category_id=tees, tags=["cotton", "summer", "crew"])
    await create(client, admin, "One Tag Tee", category_id=tees, tags=["Cotton"])
    await create(client, admin, "No Tag Tee", category_id=tees)
    await create(client, admin, "Two Tags Tee", category_id=tees, tags=["summer", "cotton", "vneck"])
    await create(client, admin, "Elsewhere", category_id=other, tags=["cotton", "summer", "crew"])
    await create(client, admin, "Draft Tee", category_id=tees, tags=["cotton", "summer", "crew"], status="draft")

    response = await client.get(f"{P}/{basic['id']}/similar")
    assert response.status_code == 200
    assert [p["name"] for p in response.json()["data"]] == ["Two Tags Tee", "One Tag Tee", "No Tag Tee"]
    assert response.json()["pagination"] == {"page": 1, "limit": 10, "total": 3, "total_pages": 1}
    by_slug = await client.get(f"{P}/basic-tee/similar", params={"limit": 2, "mode": "keyword"})
    assert [p["name"] for p in by_slug.json()["data"]] == ["Two Tags Tee", "One Tag Tee"]
    hybrid = await client.get(f"{P}/{basic['id']}/similar", params={"mode": "hybrid"})
    assert hybrid.json()["data"] == response.json()["data"]


async def test_similar_without_category_uses_shared_tags(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    loose = await create(client, admin, "Loose Item", tags=["gift", "red"])
    await create(client, admin, "Red Gift Box", tags=["red", "gift"])
    await create(client, admin, "Red Pen", tags=["red"], category_id=await category(client, admin, "Office"))
    await create(client, admin, "Blue Pen", tags=["blue"])

    response = await client.get(f"{P}/{loose['id']}/similar")
    assert [p["name"] for p in response.json()["data"]] == ["Red Gift Box", "Red Pen"]


async def test_similar_bad_input(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    product = await create(client, admin, "Lonely Lamp")
    draft = await create(client, admin, "Draft Lamp", status="draft")
    assert (await client.get(f"{P}/{product['id']}/similar")).json()["data"] == []
    for params in [{"limit": 51}, {"limit": 0}, {"mode": "semantic"}, {"mode": "nope"}]:
        response = await client.get(f"{P}/{product['id']}/similar", params=params)
        assert response.status_code == 422, params
    assert (await client.get(f"{P}/{uuid.uuid4()}/similar")).status_code == 404
    assert (await client.get(f"{P}/{draft['id']}/similar")).status_code == 404
    assert (await client.get(f"{P}/{draft['id']}/similar", headers=admin)).status_code == 200
    assert (await client.get(f"{P}/{product['id']}/similar", params={"limit": 50})).status_code == 200


# --- pure rules ---------------------------------------------------------------------------------------------


def test_words_are_letters_and_digits_only() -> None:
    assert search.words('"NEAR( Café-crème * AND') == ["near", "cafe", "creme", "and"]
    assert search.words("*") == []
    assert search.words("a_b a a") == ["a", "b"]
    assert len(search.words(" ".join(f"w{i}" for i in range(40)))) == search.MAX_WORDS


def test_corrections_are_the_nearest_words_within_the_edit_budget() -> None:
    vocabulary = ["hood", "hoodie", "hoodies", "monospace", "tee", "tea"]
    assert search.corrections("hoodei", vocabulary) == ["hoodie"]
    assert search.corrections("monospase", vocabulary) == ["monospace"]
    assert search.corrections("mnoospaec", vocabulary) == ["monospace"]  # 2 edits allowed from 8 letters
    assert search.corrections("tee", vocabulary) == []  # too short to correct
    assert search.corrections("qwxzvk", vocabulary) == []
