"""The demo store (packaged DummyJSON + Saleor catalogs), the product importer (JSON and CSV), and the
``mercato seed`` / ``mercato import products`` commands.

Database tests use the shared fixtures, so they run on SQLite and, when configured, PostgreSQL. The data comes
from the files packaged in ``mercato/demo/data`` (never from ``../shared``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner, Result

from mercato.catalog import importer
from mercato.catalog.models import (
    Attribute,
    AttributeValue,
    Category,
    Product,
    ProductImage,
    ProductVariant,
)
from mercato.cli import app as cli
from mercato.demo import loader, sources
from mercato.identity.models import User
from mercato.inventory.models import InventoryItem
from mercato.platform.context import Services

P = "/api/v1/products"
TABLES: list[type[Any]] = [
    Product, ProductVariant, ProductImage, Category, InventoryItem, Attribute, AttributeValue, User,
]  # fmt: skip


async def counts(services: Services) -> dict[str, int]:
    async with services.db.session(write=False) as session:
        return {
            model.__name__: int(await session.scalar(select(func.count()).select_from(model)) or 0) for model in TABLES
        }


async def product_named(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.get(P, params={"q": name, "limit": 100})
    assert response.status_code == 200, response.text
    [found] = [p for p in response.json()["data"] if p["name"] == name]
    return dict(found)


async def run_import(services: Services, products: list[dict[str, Any]], **kw: Any) -> importer.ImportReport:
    async with services.db.session(write=True) as session:
        return await importer.import_products(session, products, **kw)


async def run_csv(services: Services, text: str, **kw: Any) -> importer.ImportReport:
    batch = importer.read_csv(text)
    async with services.db.session(write=True) as session:
        return await importer.run_import(session, batch, **kw)


def errors(report: importer.ImportReport) -> list[tuple[int, str | None]]:
    return [(e.row, e.sku) for e in report.errors]


# --- the packaged data --------------------------------------------------------------------------------------


def test_data_files_licences_and_attribution_are_packaged() -> None:
    data = resources.files("mercato.demo").joinpath("data")
    for name in [
        "ATTRIBUTION.md", "dummyjson/products.json", "dummyjson/LICENSE", "saleor/populatedb_data.json",
        "saleor/LICENSE",
    ]:  # fmt: skip
        assert data.joinpath(name).is_file(), name
    assert "MIT License" in data.joinpath("dummyjson/LICENSE").read_text()
    assert "Copyright (c) 2020-2023, Saleor Commerce" in data.joinpath("saleor/LICENSE").read_text()
    attribution = data.joinpath("ATTRIBUTION.md").read_text()
    assert "https://github.com/Ovi/DummyJSON" in attribution
    assert "https://github.com/saleor/saleor" in attribution


def test_converted_catalog_has_both_sources_and_unique_skus() -> None:
    products = sources.packaged_products()

    saleor = [p for p in products if p["sku"].startswith("SALEOR-")]
    assert (len(products), len(saleor)) == (226, 32)
    skus = [p["sku"] for p in products] + [v["sku"] for p in products for v in p.get("variants", [])]
    assert len(skus) == len(set(skus))
    tee = next(p for p in saleor if p["name"] == "Monospace Tee")
    assert tee["category"] == "Apparel/Shirts/T-shirts"
    assert tee["attributes"] == {"material": "Cotton"} and tee["brand"] == "Saleor Loom"
    assert [(v["options"], v["stock"], v["price_modifier"]) for v in tee["variants"]] == [
        ({"size": size}, 200, "0.00") for size in ("S", "M", "L", "XL", "XXL")
    ]


def test_generated_products_are_deterministic_whatever_the_count() -> None:
    base = sources.packaged_products()

    first = sources.generated_products(base, range(1, 4))
    again = sources.generated_products(base, range(1, 51))[:3]

    assert first == again
    assert [p["sku"] for p in first] == ["GEN-00001", "GEN-00002", "GEN-00003"]


# --- the demo store -----------------------------------------------------------------------------------------


async def test_demo_store_loads_the_catalog_once(client: httpx.AsyncClient, services: Services) -> None:
    result = await loader.load_demo(services.settings, services=services)

    assert result.catalog is not None
    assert result.catalog.summary() == "created 226, updated 0, skipped 0, errors 0"
    loaded = await counts(services)
    assert loaded["Product"] == 226
    assert loaded["Category"] == 38  # Saleor's 16 + DummyJSON's 24, groceries and sunglasses shared
    assert loaded["ProductVariant"] == 56
    assert loaded["User"] == 1
    credentials = services.settings.data_dir / "demo-credentials.txt"
    assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
    assert "email: admin@demo.mercato.dev" in credentials.read_text()

    again = await loader.load_demo(services.settings, services=services)

    assert again.catalog is None
    assert await counts(services) == loaded

    tee = await product_named(client, "Monospace Tee")
    assert (tee["price"], tee["brand"], tee["stock"]) == ("20.00", "Saleor Loom", 1000)
    assert tee["weight_grams"] == 1000  # the product type's weight
    assert tee["category"]["name"] == "T-shirts"
    assert tee["attributes"] == {"material": "Cotton"}
    assert [(v["name"], v["options"], v["stock"], v["price"]) for v in tee["variants"]] == [
        (size, {"size": size}, 200, "20.00") for size in ("S", "M", "L", "XL", "XXL")
    ]
    plimsolls = await product_named(client, "White Plimsolls")
    assert [v["options"]["shoe-size"] for v in plimsolls["variants"]] == [str(n) for n in range(39, 46)]
    assert {v["stock"] for v in plimsolls["variants"]} == {500}
    hoodie = await product_named(client, "Grey Hoodie")  # not tracked by Saleor: the default demo stock
    assert (hoodie["variants"], hoodie["stock"], hoodie["price"]) == ([], sources.UNTRACKED_STOCK, "30.00")

    mascara = await product_named(client, "Essence Mascara Lash Princess")
    assert (mascara["sku"], mascara["price"], mascara["stock"], mascara["brand"]) == (
        "BEA-ESS-ESS-001", "9.99", 99, "Essence",
    )  # fmt: skip
    assert (mascara["rating_average"], mascara["rating_count"], mascara["weight_grams"]) == ("2.56", 3, 4000)
    assert mascara["category"]["slug"] == "beauty"
    assert mascara["images"][0]["url"].startswith("https://cdn.dummyjson.com/")
    assert mascara["images"][0]["thumbnail_url"].endswith("/thumbnail.webp")
    assert mascara["specifications"]["warranty"] == "1 week warranty"

    tree = (await client.get("/api/v1/categories", params={"tree": "true"})).json()
    roots = tree["data"] if isinstance(tree, dict) else tree
    apparel = next(c for c in roots if c["name"] == "Apparel")
    assert sorted(c["name"] for c in apparel["children"]) == ["Headware", "Shirts", "Sneakers", "Sweatshirts"]
    listed = await client.get(P, params={"category_id": apparel["id"], "limit": 100})
    names = {p["name"] for p in listed.json()["data"]}
    # 18 Saleor apparel products in the subcategories, and DummyJSON's 5 sunglasses joined Apparel/Headware
    assert listed.json()["pagination"]["total"] == 23
    assert {"Monospace Tee", "White Plimsolls", "Darko Polo", "Pirate's Beanie", "Black Sun Glasses"} <= names

    attributes = (await client.get("/api/v1/attributes", params={"limit": 100})).json()["data"]
    size = next(a for a in attributes if a["slug"] == "size")
    assert [v["value"] for v in size["values"]] == ["S", "M", "L", "XL", "XXL"]


async def test_demo_catalog_is_not_loaded_into_a_shop_that_has_products(
    client: httpx.AsyncClient, services: Services
) -> None:
    await run_import(services, [{"name": "Own mug", "sku": "OWN-1", "price": "5.00"}])

    async with services.db.session(write=True) as session:
        assert await loader.load_catalog(session) is None

    assert (await counts(services))["Product"] == 1


async def test_generated_products_are_added_once(client: httpx.AsyncClient, services: Services) -> None:
    first = await loader.add_generated(services, 50)
    again = await loader.add_generated(services, 50)
    more = await loader.add_generated(services, 60)

    assert (first.created, first.skipped, first.errors) == (50, 0, [])
    assert (again.created, again.skipped) == (0, 50)
    assert (more.created, more.skipped) == (10, 50)
    assert (await counts(services))["Product"] == 60
    async with services.db.session(write=False) as session:
        skus = set((await session.execute(select(Product.sku))).scalars())
    assert skus == {sources.generated_sku(n) for n in range(1, 61)}


@pytest.mark.backends("postgres")
async def test_bulk_loads_refresh_postgresql_planner_statistics(client: httpx.AsyncClient, services: Services) -> None:
    """After generated products are added, PostgreSQL's statistics are refreshed (ANALYZE): a plan made for the
    tables as they were before the load walks every product for a page of 20."""

    async def analyzed() -> Any:
        async with services.db.engine.connect() as conn:
            return await conn.scalar(text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'products'"))

    before = await analyzed()
    await loader.add_generated(services, 5)
    after = await analyzed()
    for _ in range(50):  # the statistics views may show the ANALYZE a moment later
        if after is not None and (before is None or after > before):
            break
        await asyncio.sleep(0.1)
        after = await analyzed()
    assert after is not None and (before is None or after > before)


# --- the importer -------------------------------------------------------------------------------------------


async def test_json_import_reports_bad_rows_and_imports_the_good_ones(
    client: httpx.AsyncClient, services: Services
) -> None:
    products = [
        {"name": "Mug", "sku": "MUG-1", "price": "9.50", "category": "Kitchen/Mugs", "tags": ["mug"],
         "images": ["https://img.example/mug.png"], "rating": 4.25, "rating_count": 8, "stock": 3},
        {"name": "Bad price", "sku": "BAD-1", "price": "-1"},
        {"name": "Mug again", "sku": "MUG-1", "price": "1.00"},
        {"sku": "NONAME-1", "price": "1.00"},
        {"name": "Tee", "sku": "TEE-1", "price": "20", "category": "apparel/tees",
         "attributes": {"material": "Cotton"}, "variants": [
             {"sku": "TEE-1-S", "options": {"size": "S"}, "stock": 4},
             {"sku": "TEE-1-L", "name": "Large", "options": {"size": "L"}, "price_modifier": "2.50",
              "stock": 1},
         ]},
        {"name": "Clash", "sku": "CLASH-1", "price": "3", "category": "Ghost town",
         "variants": [{"sku": "MUG-1", "options": {"size": "S"}}]},
    ]  # fmt: skip

    report = await run_import(services, products)

    assert (report.created, report.updated, report.skipped) == (2, 0, 0)
    assert errors(report) == [(2, "BAD-1"), (3, "MUG-1"), (4, "NONAME-1"), (6, "CLASH-1")]
    assert "price" in report.errors[0].error
    assert "duplicate SKU" in report.errors[1].error and "row 1" in report.errors[1].error
    assert "name" in report.errors[2].error
    assert "MUG-1" in report.errors[3].error
    async with services.db.session(write=False) as session:
        categories = set((await session.execute(select(Category.name))).scalars())
    assert categories == {"Kitchen", "Mugs", "Apparel", "Tees"}  # the failed row's "Ghost town" left no trace
    mug = await product_named(client, "Mug")
    assert (mug["category"]["name"], mug["stock"], mug["rating_average"], mug["rating_count"]) == (
        "Mugs", 3, "4.25", 8,
    )  # fmt: skip
    assert [(i["url"], i["position"]) for i in mug["images"]] == [("https://img.example/mug.png", 0)]
    tee = await product_named(client, "Tee")
    assert [(v["name"], v["price"], v["stock"]) for v in tee["variants"]] == [
        ("S", "20.00", 4), ("Large", "22.50", 1),
    ]  # fmt: skip
    assert tee["stock"] == 5 and tee["status"] == "active"


async def test_a_second_import_skips_existing_skus_unless_updating(
    client: httpx.AsyncClient, services: Services
) -> None:
    products = [
        {"name": "Lamp", "sku": "LAMP-1", "price": "30.00", "stock": 2, "images": ["https://img.example/1.png"]},
        {"name": "Shirt", "sku": "SH-1", "price": "15.00",
         "variants": [{"sku": "SH-1-M", "options": {"s": "M"}}]},
    ]  # fmt: skip
    await run_import(services, products)
    before = await counts(services)

    skipped = await run_import(services, products)

    assert (skipped.created, skipped.updated, skipped.skipped, skipped.errors) == (0, 0, 2, [])
    assert await counts(services) == before

    changed = [
        {"name": "Lamp", "sku": "LAMP-1", "price": "35.00", "stock": 9, "images": ["https://img.example/2.png"]},
        {"name": "Shirt", "sku": "SH-1", "price": "15.00", "variants": [
            {"sku": "SH-1-M", "options": {"s": "M"}, "stock": 6}, {"sku": "SH-1-L", "options": {"s": "L"}}]},
    ]  # fmt: skip
    updated = await run_import(services, changed, update=True)

    assert (updated.created, updated.updated, updated.errors) == (0, 2, [])
    lamp = await product_named(client, "Lamp")
    assert (lamp["price"], lamp["stock"]) == ("35.00", 9)
    assert [i["url"] for i in lamp["images"]] == ["https://img.example/2.png"]
    shirt = await product_named(client, "Shirt")
    assert [(v["sku"], v["stock"]) for v in shirt["variants"]] == [("SH-1-M", 6), ("SH-1-L", 0)]


CSV_GOOD = """sku,parent_sku,name,price,category,brand,tags,stock,weight_grams,description,status,image_urls,option_size,price_modifier
TEE-9,,Tee nine,20.00,Apparel/Tees,Acme,tee|cotton,,180,"Soft, cotton tee",active,https://img.example/a.png|https://img.example/b.png,,
TEE-9-S,TEE-9,,,,,,5,,,,,S,
TEE-9-L,TEE-9,Large,,,,,2,,,,,L,1.50
CUP-9,,Cup,4.00,Kitchen,,,7,,,draft,,,
"""  # noqa: E501


async def test_csv_import_with_variant_rows(client: httpx.AsyncClient, services: Services) -> None:
    report = await run_csv(services, CSV_GOOD)

    assert report.summary() == "created 2, updated 0, skipped 0, errors 0"
    tee = await product_named(client, "Tee nine")
    assert (tee["brand"], tee["tags"], tee["weight_grams"], tee["description"]) == (
        "Acme", ["tee", "cotton"], 180, "Soft, cotton tee",
    )  # fmt: skip
    assert [i["url"] for i in tee["images"]] == ["https://img.example/a.png", "https://img.example/b.png"]
    assert [(v["sku"], v["name"], v["options"], v["price"], v["stock"]) for v in tee["variants"]] == [
        ("TEE-9-S", "S", {"size": "S"}, "20.00", 5), ("TEE-9-L", "Large", {"size": "L"}, "21.50", 2),
    ]  # fmt: skip
    async with services.db.session(write=False) as session:
        cup = (await session.execute(select(Product).where(Product.sku == "CUP-9"))).scalar_one()
    assert (cup.status, cup.price) == ("draft", 4)


async def test_csv_import_reports_bad_rows_by_row_number(client: httpx.AsyncClient, services: Services) -> None:
    text = (
        "sku,parent_sku,name,price,option_colour,stock\n"
        "OK-1,,Good one,5.00,,1\n"  # row 2
        "NEG-1,,Negative,-5.00,,1\n"  # row 3
        "OK-1-RED,OK-1,,,red,4\n"  # row 4
        "OK-1,,Good one again,6.00,,1\n"  # row 5: duplicate SKU
        "OK-2,,Second,abc,,1\n"  # row 6: bad price
        "ORPHAN-1,NOPE-1,,,blue,1\n"  # row 7: unknown parent
        "NONAME-1,,,3.00,,1\n"  # row 8: no name
        "OK-3,,Third,7.00,,0\n"  # row 9
    )

    report = await run_csv(services, text)

    assert (report.created, report.skipped) == (2, 0)
    assert errors(report) == [
        (3, "NEG-1"), (5, "OK-1"), (6, "OK-2"), (7, "ORPHAN-1"), (8, "NONAME-1"),
    ]  # fmt: skip
    assert "unknown parent_sku 'NOPE-1'" in report.errors[3].error
    good = await product_named(client, "Good one")
    assert [(v["sku"], v["options"]) for v in good["variants"]] == [("OK-1-RED", {"colour": "red"})]
    assert good["stock"] == 4
    assert (await product_named(client, "Third"))["stock"] == 0
    assert (await counts(services))["Product"] == 2


async def test_csv_variant_rows_may_extend_a_stored_product(client: httpx.AsyncClient, services: Services) -> None:
    hat = {"name": "Hat", "sku": "HAT-1", "price": "10", "variants": [{"sku": "HAT-1-S"}]}
    await run_import(services, [hat])

    report = await run_csv(services, "sku,parent_sku,option_size,stock\nHAT-1-S,HAT-1,S,1\nHAT-1-M,HAT-1,M,3\n")

    assert (report.created, report.skipped, report.errors) == (1, 1, [])
    stored = await product_named(client, "Hat")
    assert [(v["sku"], v["stock"]) for v in stored["variants"]] == [("HAT-1-S", 0), ("HAT-1-M", 3)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("name,price\nMug,1\n", "'sku' column"),
        ("sku,name,colour\nA,B,red\n", "unknown column 'colour'"),
        ("sku,sku\nA,B\n", "appears twice"),
    ],
)
def test_csv_file_level_problems_are_refused(text: str, message: str) -> None:
    with pytest.raises(importer.ImportFileError, match=message):
        importer.read_csv(text)


def test_json_file_level_problems_are_refused() -> None:
    with pytest.raises(importer.ImportFileError, match="not valid JSON"):
        importer.read_json("{oops")
    with pytest.raises(importer.ImportFileError, match="list of products"):
        importer.read_json('{"name": "x"}')
    assert len(importer.read_json('{"products": [{"name": "x"}]}').items) == 1


# --- the commands -------------------------------------------------------------------------------------------


class Shop:
    """A temporary installation (SQLite file + data directory) driven through the CLI in this process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db_path = root / "var" / "mercato.db"
        self.env: dict[str, str | None] = {key: None for key in os.environ if key.startswith("MERCATO_")}
        self.env.update(
            {
                "MERCATO_DATABASE_URL": f"sqlite+aiosqlite:///{self.db_path}",
                "MERCATO_DATA_DIR": str(root / "var"),
                "MERCATO_SECRET_KEY": "demo-import-test-secret-0123456789abcdef",
            }
        )

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=self.env)

    def scalar(self, query: str) -> object:
        with contextlib.closing(sqlite3.connect(self.db_path)) as conn:
            return conn.execute(query).fetchone()[0]


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shop:
    monkeypatch.chdir(tmp_path)
    return Shop(tmp_path)


def test_import_command_exits_0_when_every_row_is_imported(shop: Shop) -> None:
    path = shop.root / "products.csv"
    path.write_text(CSV_GOOD)

    result = shop.run("import", "products", str(path))

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["created 2, updated 0, skipped 0, errors 0"]
    assert shop.scalar("SELECT count(*) FROM products") == 2
    again = shop.run("import", "products", str(path))
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == ["created 0, updated 0, skipped 2, errors 0"]


def test_import_command_lists_failed_rows_and_exits_1(shop: Shop) -> None:
    path = shop.root / "products.txt"
    path.write_text("sku,name,price\nA-1,Apple,1.00\nB-1,Banana,-2\n")

    result = shop.run("import", "products", str(path), "--format", "csv")

    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "created 1, updated 0, skipped 0, errors 1"
    assert lines[1].startswith("row 3 (sku B-1): price:")
    assert shop.scalar("SELECT group_concat(sku) FROM products") == "A-1"


def test_import_command_refuses_an_unreadable_file(shop: Shop) -> None:
    path = shop.root / "products.json"
    path.write_text("[{")

    result = shop.run("import", "products", str(path))

    assert result.exit_code == 1
    assert "not valid JSON" in result.stderr
    assert "Traceback" not in result.output


def test_seed_demo_then_scale_adds_exactly_n_once(shop: Shop) -> None:
    assert shop.run("seed").exit_code == 2

    demo = shop.run("seed", "--demo")

    assert demo.exit_code == 0, demo.output
    assert "Demo catalog: created 226, updated 0, skipped 0, errors 0" in demo.stdout
    assert shop.scalar("SELECT count(*) FROM products") == 226

    scaled = shop.run("seed", "--demo", "--scale", "50")

    assert scaled.exit_code == 0, scaled.output
    assert "demo catalog already loaded" in scaled.stdout
    assert "Generated products: created 50, updated 0, skipped 0, errors 0" in scaled.stdout
    assert shop.scalar("SELECT count(*) FROM products") == 276
    assert shop.scalar("SELECT count(*) FROM products WHERE sku LIKE 'GEN-%'") == 50

    again = shop.run("seed", "--scale", "50")

    assert again.exit_code == 0, again.output
    assert "created 0, updated 0, skipped 50, errors 0" in again.stdout
    assert shop.scalar("SELECT count(*) FROM products") == 276
    assert shop.scalar("SELECT count(*) FROM users") == 1
