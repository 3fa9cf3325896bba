"""Products, variants, categories, attributes, the public catalog, caching and conditional requests."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from mercato.catalog import categories
from mercato.catalog.models import Category, Product, ProductImage, ProductVariant
from mercato.inventory.models import InventoryItem
from mercato.platform.context import Services
from tests.conftest import bearer, make_admin, register

P = "/api/v1/products"


async def count(services: Services, model: type, *where: Any) -> int:
    async with services.db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@pytest.fixture
async def admin(services: Services, client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await make_admin(services, client))


async def create(client: httpx.AsyncClient, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": f"Thing {uuid.uuid4().hex[:6]}", "price": "10.00", "status": "active", **fields}
    response = await client.post(P, json=body, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()


async def category(client: httpx.AsyncClient, admin: dict[str, str], name: str, parent: str | None = None) -> str:
    response = await client.post("/api/v1/categories", json={"name": name, "parent_id": parent}, headers=admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_create_and_read_product_with_variants(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    tees = await category(client, admin, "T-shirts")
    created = await create(
        client,
        admin,
        name="Monospace Tee",
        sku="TEE-MONO",
        price=24,
        category_id=tees,
        brand="Saleor",
        tags=["tee", "cotton"],
        weight_grams=180,
        variants=[
            {"sku": "TEE-MONO-S", "name": "S", "options": {"size": "S"}, "stock": 5},
            {
                "sku": "TEE-MONO-L",
                "name": "L",
                "options": {"size": "L"},
                "price_modifier": "2.50",
                "stock": 3,
            },
        ],
    )
    assert created["slug"] == "monospace-tee"
    assert created["price"] == "24.00"
    assert created["currency"] == "USD"
    assert created["stock"] == 8 and created["in_stock"] is True
    assert created["category"] == {"id": tees, "name": "T-shirts", "slug": "t-shirts"}
    assert [(v["sku"], v["price"], v["stock"]) for v in created["variants"]] == [
        ("TEE-MONO-S", "24.00", 5),
        ("TEE-MONO-L", "26.50", 3),
    ]
    by_slug = await client.get(f"{P}/monospace-tee")
    by_id = await client.get(f"{P}/{created['id']}")
    assert by_slug.status_code == by_id.status_code == 200
    assert by_slug.json() == by_id.json()
    assert by_id.json()["rating_average"] == "0.00"
    assert await count(services, InventoryItem) == 2  # one row per variant, none for the product itself
    variants = await client.get(f"{P}/{created['id']}/variants")
    assert [v["name"] for v in variants.json()["data"]] == ["S", "L"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"price": -1}, "price"),
        ({"price": "abc"}, "price"),
        ({"price": "10.999"}, "price"),
        ({"name": ""}, "name"),
        ({"slug": "search"}, "slug"),
        ({"slug": "Not A Slug"}, "slug"),
        ({"category_id": str(uuid.uuid4())}, "category_id"),
        ({"status": "published"}, "status"),
        ({"stock": -3}, "stock"),
        ({"vendor_id": str(uuid.uuid4())}, "vendor_id"),
    ],
)
async def test_bad_product_input_is_422_and_writes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services, body: dict, field: str
) -> None:
    response = await client.post(P, json={"name": "Mug", "price": "9.00", **body}, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][1] == field
    assert await count(services, Product) == 0
    assert await count(services, InventoryItem) == 0


async def test_duplicate_sku_and_slug_are_409(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    await create(client, admin, name="Mug", sku="MUG-1", slug="mug")
    same_sku = await client.post(P, json={"name": "Other", "price": 1, "sku": "MUG-1"}, headers=admin)
    same_slug = await client.post(P, json={"name": "Other", "price": 1, "slug": "mug"}, headers=admin)
    variant_clash = await client.post(
        P, json={"name": "Other", "price": 1, "variants": [{"sku": "MUG-1", "name": "x"}]}, headers=admin
    )
    repeated = await client.post(
        P,
        json={
            "name": "Other",
            "price": 1,
            "variants": [{"sku": "A-1", "name": "x"}, {"sku": "A-1", "name": "y"}],
        },
        headers=admin,
    )
    assert [r.status_code for r in (same_sku, same_slug, variant_clash, repeated)] == [409, 409, 409, 409]
    assert await count(services, Product) == 1
    assert await count(services, ProductVariant) == 0
    second = await create(client, admin, name="Mug")  # slug generated around the taken one
    assert second["slug"] == "mug-2"


async def test_concurrent_creations_with_one_sku_or_slug_are_one_201_and_one_409(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """Both pass the uniqueness check before either inserts: on PostgreSQL the second insert meets the unique
    constraint, which is the same 409 as the check (it was a 500)."""
    bodies = [
        (P, {"name": "Twin A", "price": "1.00", "sku": "TWIN-1"}),
        (P, {"name": "Twin B", "price": "1.00", "slug": "twin"}),
        (P, {"name": "Twin C", "price": "1.00", "variants": [{"sku": "TWIN-V", "name": "S"}]}),
        ("/api/v1/categories", {"name": "Twins", "slug": "twins"}),
    ]
    for path, body in bodies:
        responses = await asyncio.gather(*(client.post(path, json=body, headers=admin) for _ in range(2)))
        assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
        loser = next(r for r in responses if r.status_code == 409)
        assert loser.json()["type"] == "https://mercato.dev/problems/conflict"
    assert await count(services, Product) == 3
    assert await count(services, ProductVariant) == 1
    assert await count(services, InventoryItem) == 3
    assert await count(services, Category) == 1
    # a slug made from the name is made again when a concurrent creation took it: both are created
    for path, body in [(P, {"name": "Same Name", "price": "1.00"}), ("/api/v1/categories", {"name": "Same Name"})]:
        responses = await asyncio.gather(*(client.post(path, json=body, headers=admin) for _ in range(2)))
        assert [r.status_code for r in responses] == [201, 201], [r.text for r in responses]
        assert sorted(r.json()["slug"] for r in responses) == ["same-name", "same-name-2"]


async def test_concurrent_variants_with_one_sku_are_one_success_and_one_409(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    first, second = await create(client, admin, name="Left"), await create(client, admin, name="Right")
    responses = await asyncio.gather(
        *(
            client.post(f"{P}/{p['id']}/variants", json={"sku": "SAME-V", "name": "S", "stock": 2}, headers=admin)
            for p in (first, second)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
    assert await count(services, ProductVariant) == 1
    assert await count(services, InventoryItem, InventoryItem.variant_id.is_not(None)) == 1
    third = await create(client, admin, name="Third", variants=[{"sku": "T-1", "name": "S"}])
    fourth = await create(client, admin, name="Fourth", variants=[{"sku": "F-1", "name": "S"}])
    renames = await asyncio.gather(
        *(
            client.put(f"{P}/{p['id']}/variants/{p['variants'][0]['id']}", json={"sku": "SAME-W"}, headers=admin)
            for p in (third, fourth)
        )
    )
    assert sorted(r.status_code for r in renames) == [200, 409], [r.text for r in renames]
    skus = [(await client.get(f"{P}/{p['id']}")).json()["variants"][0]["sku"] for p in (third, fourth)]
    assert skus.count("SAME-W") == 1 and set(skus) & {"T-1", "F-1"}


async def test_concurrent_changes_to_one_sku_or_slug_are_one_200_and_one_409(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Two products (two categories) given the same new SKU or slug at once: the unique constraint refuses the
    second on PostgreSQL, the same 409 as the check (it was a 500); the loser keeps its values."""
    first, second = await create(client, admin, name="Left", sku="L-1"), await create(client, admin, name="Right")
    left, right = await category(client, admin, "Left"), await category(client, admin, "Right")
    cases = [
        ([f"{P}/{first['id']}", f"{P}/{second['id']}"], {"sku": "SAME-1"}),
        ([f"{P}/{first['id']}", f"{P}/{second['id']}"], {"slug": "same"}),
        ([f"/api/v1/categories/{left}", f"/api/v1/categories/{right}"], {"slug": "same"}),
    ]
    for paths, body in cases:
        responses = await asyncio.gather(*(client.patch(path, json=body, headers=admin) for path in paths))
        assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
        assert next(r for r in responses if r.status_code == 409).json()["type"].endswith("/conflict")
        [(field, value)] = body.items()
        shown = [(await client.get(path)).json()[field] for path in paths]
        assert shown.count(value) == 1  # the winner has it, the loser kept its own


async def test_customers_cannot_write_products(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    product = await create(client, admin, name="Lamp")
    customer = bearer(await register(client))
    for method, path, body in [
        ("POST", P, {"name": "x", "price": 1}),
        ("PATCH", f"{P}/{product['id']}", {"price": 1}),
        ("DELETE", f"{P}/{product['id']}", None),
        ("POST", f"{P}/bulk", {"operations": [{"op": "delete", "id": product["id"]}]}),
        ("POST", "/api/v1/categories", {"name": "c"}),
    ]:
        response = await client.request(method, path, json=body, headers=customer)
        assert response.status_code == 403, (method, path)
    assert (await client.get(f"{P}/{product['id']}")).json()["price"] == "10.00"
    assert await count(services, Product) == 1 and await count(services, Category) == 0


async def test_only_active_products_are_public(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    draft = await create(client, admin, name="Secret", status="draft")
    await create(client, admin, name="Public")
    client.cookies.clear()
    assert (await client.get(f"{P}/{draft['id']}")).status_code == 404
    listed = await client.get(P)
    assert [p["name"] for p in listed.json()["data"]] == ["Public"]
    assert (await client.get(P, params={"status": "draft"})).status_code == 403
    staff = await client.get(P, params={"status": "draft"}, headers=admin)
    assert [p["name"] for p in staff.json()["data"]] == ["Secret"]
    assert (await client.get(f"{P}/{draft['id']}", headers=admin)).status_code == 200


async def test_list_filters_sorting_and_pagination(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    clothes = await category(client, admin, "Clothes")
    shoes = await category(client, admin, "Shoes", parent=clothes)
    await create(client, admin, name="Boot", price="80.00", category_id=shoes, brand="Acme", stock=2)
    await create(client, admin, name="Sock", price="5.00", category_id=clothes, brand="Acme", stock=0)
    await create(client, admin, name="Hat", price="20.00", brand="Other", stock=7)

    async def names(**params: Any) -> list[str]:
        response = await client.get(P, params=params)
        assert response.status_code == 200, response.text
        return [p["name"] for p in response.json()["data"]]

    assert await names(category_id=clothes, sort="name") == ["Boot", "Sock"]  # includes the subcategory
    assert await names(category_id="shoes") == ["Boot"]
    assert await names(min_price="10", max_price="50") == ["Hat"]
    assert await names(brand="acme", sort="-price") == ["Boot", "Sock"]
    assert await names(in_stock="true", sort="price") == ["Hat", "Boot"]
    assert await names(in_stock="false") == ["Sock"]
    assert await names(q="oo", sort="name") == ["Boot"]
    assert await names(sort="price") == ["Sock", "Hat", "Boot"]
    first = await client.get(P, params={"sort": "name", "limit": 2})
    assert first.json()["pagination"] == {"page": 1, "limit": 2, "total": 3, "total_pages": 2}
    assert 'rel="next"' in first.headers["link"]
    assert await names(sort="name", limit=2, page=2) == ["Sock"]
    assert (await client.get(P, params={"category_id": str(uuid.uuid4())})).status_code == 404


async def test_text_filters_fold_case_beyond_ascii(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """`q` and `brand` match whatever the case of accented letters, on SQLite as on PostgreSQL."""
    await create(client, admin, name="Écharpe laine", brand="Élan", price="30.00")
    await create(client, admin, name="Bonnet", brand="Other", price="10.00")

    async def names(**params: str) -> list[str]:
        response = await client.get(P, params=params)
        assert response.status_code == 200, response.text
        return [p["name"] for p in response.json()["data"]]

    for params in ({"q": "Écharpe"}, {"q": "écharpe"}, {"q": "ÉCHARPE"}, {"brand": "élan"}, {"brand": "ÉLAN"}):
        assert await names(**params) == ["Écharpe laine"], params


async def test_in_stock_filter_with_products_sold_by_variant_in_the_catalog(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """A product without variants is in stock through its own row even when other products have variants; a
    product with variants only through its variants."""
    await create(client, admin, name="Mug", price="9.00", stock=3)
    await create(client, admin, name="Plate", price="7.00", stock=0)
    await create(client, admin, name="Tee", price="15.00", variants=[{"sku": "TEE-S", "name": "S", "stock": 4}])
    await create(client, admin, name="Cap", price="12.00", variants=[{"sku": "CAP-S", "name": "S", "stock": 0}])

    async def names(in_stock: str) -> list[str]:
        response = await client.get(P, params={"in_stock": in_stock, "sort": "name"})
        assert response.status_code == 200, response.text
        return [p["name"] for p in response.json()["data"]]

    assert await names("true") == ["Mug", "Tee"]
    assert await names("false") == ["Cap", "Plate"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"page": 0},
        {"min_price": "50", "max_price": "10"},
        {"sort": "password"},
        {"min_price": "-1"},
        {"in_stock": "maybe"},
        {"vendor_id": "1; DROP TABLE products"},
        {"q": "x" * 500},
    ],
)
async def test_bad_list_parameters_are_422(client: httpx.AsyncClient, params: dict) -> None:
    response = await client.get(P, params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_sql_metacharacters_in_ids_and_filters(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(client, admin, name="Safe")
    for path in [f"{P}/1' OR '1'='1", f"{P}/%27%3B--", "/api/v1/categories/' OR 1=1 --"]:
        assert (await client.get(path)).status_code == 404
    weird = await client.get(P, params={"q": "%' OR 1=1 --", "brand": "'; DROP TABLE products; --"})
    assert weird.status_code == 200
    assert weird.json()["data"] == []
    assert (await client.get(P)).json()["pagination"]["total"] == 1


async def test_update_with_if_match_and_etag(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    product = await create(client, admin, name="Kettle", stock=4)
    read = await client.get(f"{P}/{product['id']}")
    etag = read.headers["etag"]
    assert (await client.get(f"{P}/{product['id']}", headers={"If-None-Match": etag})).status_code == 304
    stale = await client.patch(
        f"{P}/{product['id']}", json={"price": "12.00"}, headers={**admin, "If-Match": '"not-the-tag"'}
    )
    assert stale.status_code == 412
    assert (await client.get(f"{P}/{product['id']}")).json()["price"] == "10.00"
    ok = await client.patch(
        f"{P}/{product['id']}", json={"price": "12.00", "stock": 9}, headers={**admin, "If-Match": etag}
    )
    assert ok.status_code == 200
    assert ok.json()["price"] == "12.00" and ok.json()["stock"] == 9
    after = await client.get(f"{P}/{product['id']}", headers={"If-None-Match": etag})
    assert after.status_code == 200  # the cache was invalidated by the write
    assert after.json()["price"] == "12.00"
    put = await client.put(f"{P}/{product['id']}", json={"name": "Kettle Pro"}, headers=admin)
    assert put.json()["name"] == "Kettle Pro" and put.json()["price"] == "12.00"


async def test_if_match_with_a_weak_tag_never_matches(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """RFC 9110 §13.1.1: If-Match uses the strong comparison, so ``W/"<current tag>"`` is a 412, changing nothing."""
    product = await create(client, admin, name="Kettle", stock=4)
    etag = (await client.get(f"{P}/{product['id']}")).headers["etag"]
    weak = await client.patch(
        f"{P}/{product['id']}", json={"price": "12.00"}, headers={**admin, "If-Match": f"W/{etag}"}
    )
    assert weak.status_code == 412
    assert weak.json()["type"] == "https://mercato.dev/problems/precondition-failed"
    assert (await client.get(f"{P}/{product['id']}")).json()["price"] == "10.00"
    listed = await client.patch(
        f"{P}/{product['id']}", json={"price": "13.00"}, headers={**admin, "If-Match": f'"other", {etag}'}
    )
    assert listed.status_code == 200 and listed.json()["price"] == "13.00"


async def test_concurrent_patches_with_the_same_if_match_one_wins(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Two PATCHes sent at once with the ETag both read: the first changes the product, the second is 412 (the
    product row is locked before the tags are compared, so the second sees the first's change)."""
    product = await create(client, admin, name="Kettle", stock=4)
    etag = (await client.get(f"{P}/{product['id']}")).headers["etag"]

    async def patch(price: str) -> httpx.Response:
        return await client.patch(f"{P}/{product['id']}", json={"price": price}, headers={**admin, "If-Match": etag})

    first, second = await asyncio.gather(patch("11.00"), patch("12.00"))
    assert sorted([first.status_code, second.status_code]) == [200, 412]
    winner = first if first.status_code == 200 else second
    assert (await client.get(f"{P}/{product['id']}")).json()["price"] == winner.json()["price"]


async def test_list_etag_and_cache_invalidation(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(client, admin, name="One")
    first = await client.get(P)
    assert (await client.get(P, headers={"If-None-Match": first.headers["etag"]})).status_code == 304
    await create(client, admin, name="Two")
    second = await client.get(P, headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 200
    assert {p["name"] for p in second.json()["data"]} == {"One", "Two"}


async def test_soft_delete_and_restore(client: httpx.AsyncClient, admin: dict[str, str], services: Services) -> None:
    product = await create(client, admin, name="Chair")
    assert (await client.delete(f"{P}/{product['id']}", headers=admin)).status_code == 204
    assert (await client.get(f"{P}/{product['id']}")).status_code == 404
    assert (await client.get(P)).json()["data"] == []
    deleted = await client.get(f"{P}/deleted", headers=admin)
    assert [p["id"] for p in deleted.json()["data"]] == [product["id"]]
    restored = await client.post(f"{P}/{product['id']}/restore", headers=admin)
    assert restored.status_code == 200
    assert (await client.get(f"{P}/{product['id']}")).status_code == 200
    assert await count(services, Product) == 1


async def test_a_product_restored_after_its_category_was_deleted_has_no_category(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    lamps = await category(client, admin, "Lamps")
    product = await create(client, admin, name="Desk Lamp", category_id=lamps)
    assert (await client.delete(f"{P}/{product['id']}", headers=admin)).status_code == 204
    assert (await client.delete(f"/api/v1/categories/{lamps}", headers=admin)).status_code == 204  # no live products
    restored = await client.post(f"{P}/{product['id']}/restore", headers=admin)
    assert restored.status_code == 200, restored.text
    assert (restored.json()["category_id"], restored.json()["category"]) == (None, None)
    shown = await client.get(f"{P}/{product['id']}")
    assert shown.status_code == 200 and shown.json()["category_id"] is None
    assert await count(services, Product, Product.category_id.is_not(None)) == 0
    assert (await client.get(f"/api/v1/categories/{lamps}")).status_code == 404  # the category stays deleted


async def test_variants_crud(client: httpx.AsyncClient, admin: dict[str, str], services: Services) -> None:
    product = await create(client, admin, name="Hoodie", price="40.00", variants=[{"sku": "H-S", "name": "S"}])
    added = await client.post(
        f"{P}/{product['id']}/variants",
        headers=admin,
        json={"sku": "H-M", "name": "M", "price_modifier": "-5", "stock": 2},
    )
    assert added.status_code == 201
    assert added.json()["price"] == "35.00" and added.json()["stock"] == 2
    dup = await client.post(f"{P}/{product['id']}/variants", headers=admin, json={"sku": "H-S", "name": "again"})
    assert dup.status_code == 409
    vid = added.json()["id"]
    updated = await client.put(f"{P}/{product['id']}/variants/{vid}", headers=admin, json={"stock": 6})
    assert updated.status_code == 200 and updated.json()["stock"] == 6
    assert (await client.get(f"{P}/{product['id']}")).json()["stock"] == 6
    assert (await client.delete(f"{P}/{product['id']}/variants/{vid}", headers=admin)).status_code == 204
    assert await count(services, ProductVariant) == 1
    assert await count(services, InventoryItem) == 1


async def test_bulk_is_all_or_nothing(client: httpx.AsyncClient, admin: dict[str, str], services: Services) -> None:
    existing = await create(client, admin, name="Old", sku="OLD-1")
    failing = await client.post(
        f"{P}/bulk",
        headers=admin,
        json={
            "operations": [
                {"op": "create", "data": {"name": "New A", "price": "1.00", "sku": "NEW-A"}},
                {"op": "create", "data": {"name": "New B", "price": "-1"}},
                {"op": "update", "id": existing["id"], "data": {"price": "2.00"}},
                {"op": "create", "data": {"name": "Clash", "price": "1.00", "sku": "OLD-1"}},
                {"op": "delete", "id": str(uuid.uuid4())},
            ]
        },
    )
    assert failing.status_code == 422
    errors = failing.json()["errors"]
    assert [(e["index"], e["status"]) for e in errors] == [(1, 422), (3, 409), (4, 404)]
    assert await count(services, Product) == 1
    assert (await client.get(f"{P}/{existing['id']}")).json()["price"] == "10.00"
    ok = await client.post(
        f"{P}/bulk",
        headers=admin,
        json={
            "operations": [
                {
                    "op": "create",
                    "data": {"name": "New A", "price": "1.00", "sku": "NEW-A", "status": "active"},
                },
                {"op": "update", "id": existing["id"], "data": {"price": "2.00"}},
            ]
        },
    )
    assert ok.status_code == 200
    assert [r["op"] for r in ok.json()["results"]] == ["create", "update"]
    assert await count(services, Product) == 2
    too_many = await client.post(f"{P}/bulk", headers=admin, json={"operations": [{"op": "delete", "id": "x"}] * 501})
    assert too_many.status_code == 422


@pytest.mark.parametrize("field", ["tags", "attributes", "specifications"])
async def test_null_json_fields_are_422_in_bulk_and_patch(
    client: httpx.AsyncClient, admin: dict[str, str], field: str
) -> None:
    product = await create(client, admin, name="Lamp", tags=["desk"], attributes={"colour": "red"})
    before = (await client.get(f"{P}/{product['id']}")).json()
    bulk = await client.post(
        f"{P}/bulk", headers=admin, json={"operations": [{"op": "update", "id": product["id"], "data": {field: None}}]}
    )
    assert bulk.status_code == 422, bulk.text
    [error] = bulk.json()["errors"]
    assert error["index"] == 0 and error["status"] == 422 and field in error["detail"]
    patched = await client.patch(f"{P}/{product['id']}", json={field: None}, headers=admin)
    assert patched.status_code == 422, patched.text
    assert patched.json()["errors"][0]["loc"] == ["body", field]
    after = await client.get(f"{P}/{product['id']}")
    assert after.status_code == 200 and after.json() == before


@pytest.mark.parametrize(
    "body",
    [
        {"attributes": {f"a{i}": i for i in range(51)}},
        {"attributes": {"k" * 101: 1}},
        {"specifications": {f"s{i}": i for i in range(101)}},
        {"specifications": {"k" * 101: 1}},
    ],
)
async def test_update_limits_attributes_and_specifications_as_create_does(
    client: httpx.AsyncClient, admin: dict[str, str], body: dict[str, Any]
) -> None:
    product = await create(client, admin, name="Desk")
    field = next(iter(body))
    created = await client.post(P, json={"name": "Other", "price": "1.00", **body}, headers=admin)
    patched = await client.patch(f"{P}/{product['id']}", json=body, headers=admin)
    assert created.status_code == patched.status_code == 422, patched.text
    assert patched.json()["errors"][0]["loc"][:2] == ["body", field]
    assert (await client.get(f"{P}/{product['id']}")).json()[field] == {}


async def test_category_tree_moves_and_deletion(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    root = await category(client, admin, "Apparel")
    child = await category(client, admin, "Shirts", parent=root)
    grandchild = await category(client, admin, "Polo", parent=child)
    other = await category(client, admin, "Home")
    tree = (await client.get("/api/v1/categories", params={"tree": "true"})).json()["data"]
    apparel = next(n for n in tree if n["id"] == root)
    assert apparel["children"][0]["children"][0]["id"] == grandchild
    cycle = await client.patch(f"/api/v1/categories/{root}", json={"parent_id": grandchild}, headers=admin)
    assert cycle.status_code == 409
    assert (
        await client.patch(f"/api/v1/categories/{root}", json={"parent_id": root}, headers=admin)
    ).status_code == 409
    product = await create(client, admin, name="Polo Shirt", category_id=grandchild)
    blocked = await client.delete(f"/api/v1/categories/{root}", headers=admin)
    assert blocked.status_code == 409
    assert await count(services, Category, Category.deleted_at.is_not(None)) == 0
    moved = await client.delete(f"/api/v1/categories/{root}", params={"reassign_to": other}, headers=admin)
    assert moved.status_code == 204
    assert (await client.get(f"{P}/{product['id']}")).json()["category_id"] == other
    deleted = (await client.get("/api/v1/categories/deleted", headers=admin)).json()["data"]
    assert {c["id"] for c in deleted} == {root, child, grandchild}
    assert (await client.post(f"/api/v1/categories/{child}/restore", headers=admin)).json()["parent_id"] is None
    in_other = await client.get(f"/api/v1/categories/{other}/products")
    assert [p["id"] for p in in_other.json()["data"]] == [product["id"]]


async def test_restoring_a_category_brings_back_the_subtree_deleted_with_it(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    garden = await category(client, admin, "Garden")
    tools = await category(client, admin, "Tools", parent=garden)
    spades = await category(client, admin, "Spades", parent=tools)
    seeds = await category(client, admin, "Seeds", parent=garden)
    tomato = await category(client, admin, "Tomato seeds", parent=seeds)
    assert (await client.delete(f"/api/v1/categories/{seeds}", headers=admin)).status_code == 204  # on its own
    assert (await client.delete(f"/api/v1/categories/{garden}", headers=admin)).status_code == 204

    async def deleted_ids() -> set[str]:
        listed = await client.get("/api/v1/categories/deleted", headers=admin)
        assert listed.status_code == 200, listed.text
        async with services.db.session(write=False) as session:
            stored = set(await session.scalars(select(Category.id).where(Category.deleted_at.is_not(None))))
        assert {str(i) for i in stored} == {c["id"] for c in listed.json()["data"]}
        return {str(i) for i in stored}

    def nested(nodes: list[dict[str, Any]]) -> list[Any]:
        return [(n["name"], nested(n["children"])) for n in nodes]

    assert await deleted_ids() == {garden, tools, spades, seeds, tomato}

    restored = await client.post(f"/api/v1/categories/{garden}/restore", headers=admin)

    assert restored.status_code == 200, restored.text
    assert (restored.json()["id"], restored.json()["parent_id"]) == (garden, None)
    assert await deleted_ids() == {seeds, tomato}  # deleted earlier, separately: still deleted
    tree = (await client.get("/api/v1/categories", params={"tree": "true"})).json()["data"]
    assert nested(tree) == [("Garden", [("Tools", [("Spades", [])])])]
    assert (await client.get("/api/v1/categories/spades")).json()["parent_id"] == tools

    again = await client.post(f"/api/v1/categories/{seeds}/restore", headers=admin)  # and its own subtree
    assert again.status_code == 200 and again.json()["parent_id"] == garden
    assert await deleted_ids() == set()
    tree = (await client.get("/api/v1/categories", params={"tree": "true"})).json()["data"]
    assert nested(tree) == [("Garden", [("Seeds", [("Tomato seeds", [])]), ("Tools", [("Spades", [])])])]
    assert (await client.post(f"/api/v1/categories/{garden}/restore", headers=admin)).status_code == 404


async def test_a_deleted_category_keeps_its_slug_so_restoring_it_never_clashes(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    lamps = await category(client, admin, "Lamps")
    desks = await category(client, admin, "Desks")
    assert (await client.delete(f"/api/v1/categories/{lamps}", headers=admin)).status_code == 204

    taken = await client.post("/api/v1/categories", json={"name": "Lamps", "slug": "lamps"}, headers=admin)
    moved = await client.patch(f"/api/v1/categories/{desks}", json={"slug": "lamps"}, headers=admin)

    assert (taken.status_code, moved.status_code) == (409, 409)
    assert await count(services, Category, Category.slug == "lamps") == 1
    restored = await client.post(f"/api/v1/categories/{lamps}/restore", headers=admin)
    assert restored.status_code == 200 and restored.json()["slug"] == "lamps"


async def test_category_position_null_is_422(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    created = await client.post("/api/v1/categories", json={"name": "Lamps", "position": 3}, headers=admin)
    category_id = created.json()["id"]
    response = await client.patch(f"/api/v1/categories/{category_id}", json={"position": None}, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "position"]
    assert (await client.get(f"/api/v1/categories/{category_id}")).json()["position"] == 3


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/api/v1/categories", {"name": "Lamps", "slug": "a" * 201}, ["body", "slug"]),
        ("/api/v1/attributes", {"name": "Size", "slug": "a" * 101}, ["body", "slug"]),
        (P, {"name": "Tee", "price": "1.00", "variants": [{"sku": "T-1", "name": "v" * 201}]}, ["body", "variants", 0]),
    ],
)
async def test_texts_longer_than_their_columns_are_422(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services, path: str, body: dict, loc: list
) -> None:
    response = await client.post(path, json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][: len(loc)] == loc
    assert await count(services, Category) == await count(services, Product) == 0


async def test_variant_and_category_updates_longer_than_their_columns_are_422(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    product = await create(client, admin, name="Tee", variants=[{"sku": "T-1", "name": "S"}])
    variant_id = product["variants"][0]["id"]
    lamps = await category(client, admin, "Lamps")
    renamed = await client.put(f"{P}/{product['id']}/variants/{variant_id}", json={"name": "v" * 201}, headers=admin)
    added = await client.post(f"{P}/{product['id']}/variants", json={"sku": "T-2", "name": "v" * 201}, headers=admin)
    moved = await client.patch(f"/api/v1/categories/{lamps}", json={"slug": "a" * 201}, headers=admin)
    assert [r.status_code for r in (renamed, added, moved)] == [422, 422, 422]
    assert [r.json()["errors"][0]["loc"] for r in (renamed, added, moved)] == [
        ["body", "name"],
        ["body", "name"],
        ["body", "slug"],
    ]
    assert [v["name"] for v in (await client.get(f"{P}/{product['id']}")).json()["variants"]] == ["S"]
    assert (await client.get(f"/api/v1/categories/{lamps}")).json()["slug"] == "lamps"


async def test_generated_slugs_fit_their_columns(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """Made from the longest names (with "-2" for a taken one), and from ligatures that NFKD makes three
    letters each ("\ufb03" is "ffi"): never longer than the column (200 for categories and attribute values,
    100 for attributes); PostgreSQL refused them with a 500."""
    slugs = []
    for _ in range(2):
        response = await client.post("/api/v1/categories", json={"name": "a" * 200}, headers=admin)
        assert response.status_code == 201, response.text
        slugs.append(response.json()["slug"])
    assert len(set(slugs)) == 2 and max(len(slug) for slug in slugs) <= 200
    assert slugs[1].endswith("-2")
    attribute = await client.post(
        "/api/v1/attributes", json={"name": "\ufb03" * 100, "values": ["\ufb03" * 200]}, headers=admin
    )
    assert attribute.status_code == 201, attribute.text
    assert 0 < len(attribute.json()["slug"]) <= 100
    assert 0 < len(attribute.json()["values"][0]["slug"]) <= 200
    added = await client.post(
        f"/api/v1/attributes/{attribute.json()['id']}/values", json={"value": "\ufb04" * 200}, headers=admin
    )
    assert added.status_code == 201, added.text
    assert 0 < len(added.json()["values"][1]["slug"]) <= 200


async def test_attributes_and_values(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    created = await client.post("/api/v1/attributes", headers=admin, json={"name": "Size", "values": ["S", "M"]})
    assert created.status_code == 201
    attribute_id = created.json()["id"]
    added = await client.post(f"/api/v1/attributes/{attribute_id}/values", headers=admin, json={"value": "XL"})
    assert [v["value"] for v in added.json()["values"]] == ["S", "M", "XL"]
    assert (
        await client.post(f"/api/v1/attributes/{attribute_id}/values", headers=admin, json={"value": "xl"})
    ).status_code == 409
    listed = await client.get("/api/v1/attributes")
    assert listed.json()["data"][0]["slug"] == "size"


async def test_attribute_or_value_that_loses_the_race_for_its_slug_is_409(
    client: httpx.AsyncClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two creations of one slug at once both pass the "slug free?" check on PostgreSQL before either inserts; the
    loser meets the unique constraint. Made deterministic by checks that answer "free": 409, not a 500."""
    created = await client.post("/api/v1/attributes", headers=admin, json={"name": "Size", "values": ["S"]})
    attribute_id = created.json()["id"]

    async def nothing(*_: object) -> list[object]:
        return []

    async def no_attribute(*_: object) -> None:
        return None

    monkeypatch.setattr(categories.repository, "attribute_by_slug", no_attribute)
    monkeypatch.setattr(categories.repository, "attribute_values", nothing)
    again = await client.post("/api/v1/attributes", headers=admin, json={"name": "Size", "values": []})
    assert again.status_code == 409 and again.json()["type"].endswith("/conflict"), again.text
    value = await client.post(f"/api/v1/attributes/{attribute_id}/values", headers=admin, json={"value": "s"})
    assert value.status_code == 409 and value.json()["type"].endswith("/conflict"), value.text
    monkeypatch.undo()
    assert [v["value"] for v in (await client.get(f"/api/v1/attributes/{attribute_id}/values")).json()["values"]] == [
        "S"
    ]


async def test_public_catalog_shape(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(client, admin, name="Visible", sku="VIS-1", price="3.50")
    await create(client, admin, name="Hidden", status="draft")
    response = await client.get("/api/v1/catalog", params={"search": "vis"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"total_count", "page", "limit", "data"}
    assert body["limit"] == 50 and body["total_count"] == 1
    item = body["data"][0]
    assert set(item) == {
        "id",
        "internal_sku",
        "name",
        "category_id",
        "min_price",
        "max_price",
        "supplier_count",
    }
    assert (item["internal_sku"], item["min_price"], item["max_price"], item["supplier_count"]) == (
        "VIS-1",
        "3.50",
        "3.50",
        0,
    )
    assert (await client.get("/api/v1/catalog", params={"limit": 201})).status_code == 422


async def test_listing_costs_a_fixed_number_of_queries(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """No N+1: a page of products with variants, images, stock and a category, with its total, is one
    statement whatever its size (staff listings are not cached, so every request reaches the database)."""
    from sqlalchemy import event

    from mercato.catalog import repository

    shelf = await category(client, admin, "Shelf")
    for i in range(12):
        product = await create(
            client,
            admin,
            name=f"Item {i:02}",
            category_id=shelf,
            variants=[{"sku": f"IT-{i}-A", "name": "A", "stock": 1}, {"sku": f"IT-{i}-B", "name": "B", "stock": 2}],
        )
        async with services.db.session(write=True) as session:
            await repository.add_remote_images(
                session, uuid.UUID(product["id"]), [(f"https://img.example/{i}.jpg", None, None)]
            )
    statements: list[str] = []

    def count_statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # the listing's tables only: the caller's account may be read too, when its session cache entry expired
        if statement.lstrip().upper().startswith("SELECT") and any(
            table in statement for table in ("products", "categories", "product_", "inventory_items")
        ):
            statements.append(statement)

    async def queries_for(limit: int) -> int:
        statements.clear()
        event.listen(services.db.engine.sync_engine, "before_cursor_execute", count_statement)
        try:
            response = await client.get(P, params={"limit": limit, "sort": "name"}, headers=admin)
        finally:
            event.remove(services.db.engine.sync_engine, "before_cursor_execute", count_statement)
        assert response.status_code == 200
        body = response.json()
        assert len(body["data"]) == limit
        assert all(len(p["variants"]) == 2 and len(p["images"]) == 1 and p["category"] for p in body["data"])
        return len(statements)

    small, large = await queries_for(2), await queries_for(12)
    assert small == large == 1


async def test_listed_products_are_shaped_like_the_product_itself(
    client: httpx.AsyncClient, admin: dict[str, str], services: Services
) -> None:
    """Listings and search results are serialised from plain rows: each item equals the product's own JSON."""
    from mercato.catalog import repository

    shelf = await category(client, admin, "Shelf")
    full = await create(
        client,
        admin,
        name="Lamp Deluxe",
        price="19.90",
        compare_at_price="25.00",
        category_id=shelf,
        brand="Lumen",
        tags=["lamp", "desk"],
        attributes={"colour": "red", "watts": 40},
        specifications={"height_cm": 41.5},
        weight_grams=900,
        variants=[
            {"sku": "LAMP-A", "name": "A", "options": {"plug": "EU"}, "price_modifier": "-20.00", "stock": 2},
            {"sku": "LAMP-B", "name": "B", "price_modifier": "1.05", "stock": 0},
        ],
    )
    async with services.db.session(write=True) as session:
        await repository.add_remote_images(
            session,
            uuid.UUID(full["id"]),
            [
                ("https://img.example/l.jpg", "https://img.example/t.jpg", "Lamp"),
                ("https://img.example/b.jpg", None, None),
            ],
        )
        await session.flush()
        # the second image first; a rating; a creation time on a whole second (shown without a fraction)
        await session.execute(
            update(ProductImage).where(ProductImage.url == "https://img.example/b.jpg").values(position=-1)
        )
        await session.execute(
            update(Product)
            .where(Product.id == uuid.UUID(full["id"]))
            .values(rating_average=Decimal("4.5"), rating_count=2, created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
        )
    plain = await create(client, admin, name='Lamp Plain "Ünïcode" — ✓', stock=3)
    listed = (await client.get(P, params={"sort": "name"})).json()
    found = (await client.get(f"{P}/search", params={"q": "lamp", "sort": "name"})).json()
    for body in (listed, found):
        assert body["pagination"] == {"page": 1, "limit": 20, "total": 2, "total_pages": 1}
        singles = [(await client.get(f"{P}/{p['id']}")).json() for p in (full, plain)]
        assert body["data"] == singles
    shown = listed["data"][0]
    assert shown["variants"][0]["price"] == "0.00"  # never below zero
    assert [image["alt"] for image in shown["images"]] == [None, "Lamp"]
    assert (shown["rating_average"], shown["created_at"]) == ("4.50", "2026-01-02T03:04:05Z")
    assert (shown["stock"], shown["in_stock"], listed["data"][1]["compare_at_price"]) == (2, True, None)


async def test_given_ids_are_listed_as_one_page_only(services: Services) -> None:
    """Ids given to a listing (search results, similar products) are picked before they are filtered and
    ordered, so paging through them is refused rather than answered with arbitrary pages."""
    from mercato.catalog import repository

    wanted = repository.ProductFilter(ids=[uuid.uuid4(), uuid.uuid4()])
    async with services.db.session(write=False) as session:
        for page, limit in ((1, 1), (2, 2)):
            with pytest.raises(ValueError, match="one page"):
                await repository.listed_rows(session, wanted, sort="name", page=page, limit=limit, currency="USD")
        assert await repository.listed_rows(session, wanted, sort="name", page=1, limit=2, currency="USD") == []


async def test_list_total_stays_right_after_writes(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """The total is counted in the page's own statement, and apart past the last page; both follow writes."""
    made = [await create(client, admin, name=f"Cup {i}") for i in range(3)]

    async def pagination(page: int) -> dict[str, int]:
        response = await client.get(P, params={"limit": 2, "page": page})
        assert response.status_code == 200
        return dict(response.json()["pagination"])

    assert await pagination(1) == {"page": 1, "limit": 2, "total": 3, "total_pages": 2}
    assert await pagination(2) == {"page": 2, "limit": 2, "total": 3, "total_pages": 2}
    assert await pagination(3) == {"page": 3, "limit": 2, "total": 3, "total_pages": 2}
    await create(client, admin, name="Cup 3")
    assert (await pagination(1))["total"] == 4
    assert (await pagination(2))["total"] == 4
    assert (await client.delete(f"{P}/{made[0]['id']}", headers=admin)).status_code == 204
    assert (await pagination(1))["total"] == 3
    assert (await pagination(2))["total"] == 3


async def test_public_reads_are_replayed_only_to_anonymous_callers(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """A repeated anonymous GET is answered from the cached bytes (same body, ETag and Link; 304 on
    If-None-Match); a caller with credentials gets its own answer; a write makes the replay stale."""
    await create(client, admin, name="Open")
    await create(client, admin, name="Hidden", status="draft")
    await create(client, admin, name="Other")
    client.cookies.clear()  # signing in left the admin's session cookie: the reads below are anonymous
    first = await client.get(P, params={"limit": 1, "sort": "name"})
    again = await client.get(P, params={"limit": 1, "sort": "name"})
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["link"] == first.headers["link"]
    assert again.headers["content-type"] == "application/json"
    assert [p["name"] for p in again.json()["data"]] == ["Open"]
    not_modified = await client.get(
        P, params={"limit": 1, "sort": "name"}, headers={"If-None-Match": first.headers["etag"]}
    )
    assert not_modified.status_code == 304
    staff = await client.get(P, params={"limit": 1, "sort": "name"}, headers=admin)
    assert [p["name"] for p in staff.json()["data"]] == ["Hidden"]
    assert (
        await client.get(P, params={"limit": 1, "sort": "name"}, headers={"Authorization": "Bearer x"})
    ).status_code == 401
    await create(client, admin, name="Alpha")
    after = await client.get(P, params={"limit": 1, "sort": "name"})
    assert [p["name"] for p in after.json()["data"]] == ["Alpha"]
    assert after.json()["pagination"]["total"] == 3
