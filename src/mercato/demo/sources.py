"""The demo store's data: DummyJSON's and Saleor's sample catalogs (packaged under ``data/``, see
``data/ATTRIBUTION.md``) converted into the importer's JSON shape, and deterministic generated products
derived from them for benchmarks. Pure functions: no database."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from importlib import resources
from typing import Any

CENT = Decimal("0.01")
#: Stock given to Saleor variants that Saleor does not track (``track_inventory`` false, no stock record).
UNTRACKED_STOCK = 100
#: SKU prefix of generated products: ``GEN-00001``, ``GEN-00002``...
GENERATED_PREFIX = "GEN-"
_GRAMS = {"g": Decimal(1), "kg": Decimal(1000), "lb": Decimal("453.59237"), "oz": Decimal("28.349523125")}
_TAG = re.compile(r"<[^>]+>")


def _data(*parts: str) -> Any:
    return json.loads(resources.files("mercato.demo").joinpath("data", *parts).read_text(encoding="utf-8"))


def packaged_products() -> list[dict[str, Any]]:
    """The demo catalog in the importer's JSON shape: Saleor's products first (they bring a category tree
    that DummyJSON's ``groceries`` and ``sunglasses`` join), then DummyJSON's."""
    saleor = saleor_products(_data("saleor", "populatedb_data.json"))
    dummyjson = dummyjson_products(_data("dummyjson", "products.json"))
    return saleor + dummyjson


def _money(value: Any) -> str:
    return str(Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_EVEN))


# --- DummyJSON ----------------------------------------------------------------------------------------------


def dummyjson_products(products: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Convert DummyJSON's ``products.json`` entries.

    ``title`` → ``name``; ``category`` (a slug) → a top-level category; ``rating`` → ``rating`` with
    ``rating_count`` = the number of its reviews (the reviews themselves are not imported); ``weight`` is
    read as kilograms (DummyJSON documents no unit); warranty, shipping, return policy, minimum order
    quantity, dimensions (no unit documented) and barcode → ``specifications``; ``images`` stay remote, the
    ``thumbnail`` is the first image's thumbnail. ``discountPercentage`` and ``availabilityStatus`` (derived
    from stock) are not used.
    """
    converted = []
    for p in products:
        images = [
            {"url": url, "thumbnail_url": p.get("thumbnail") if index == 0 else None, "alt": p["title"]}
            for index, url in enumerate(p.get("images") or [])
        ]
        specifications = {
            "warranty": p.get("warrantyInformation"),
            "shipping": p.get("shippingInformation"),
            "return_policy": p.get("returnPolicy"),
            "minimum_order_quantity": p.get("minimumOrderQuantity"),
            "dimensions": p.get("dimensions"),
            "barcode": (p.get("meta") or {}).get("barcode"),
        }
        item: dict[str, Any] = {
            "name": p["title"],
            "sku": p["sku"],
            "price": _money(p["price"]),
            "description": p.get("description") or None,
            "category": p.get("category"),
            "tags": list(dict.fromkeys(p.get("tags") or [])),
            "stock": int(p.get("stock") or 0),
            "rating": str(p.get("rating", 0)),
            "rating_count": len(p.get("reviews") or []),
            "images": images,
            "specifications": {k: v for k, v in specifications.items() if v is not None},
            "status": "active",
        }
        if p.get("brand"):
            item["brand"] = p["brand"]
        if p.get("weight"):
            item["weight_grams"] = int(Decimal(str(p["weight"])) * 1000)
        converted.append(item)
    return converted


# --- Saleor populatedb --------------------------------------------------------------------------------------


def saleor_products(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Convert Saleor's ``populatedb_data.json`` (Django ``dumpdata`` records) into products.

    - prices come from the USD channel's variant listings: the product's price is its cheapest variant's and
      each variant's ``price_modifier`` is its price minus that;
    - a product whose type has variants (or whose variant carries variant attributes) keeps its variants, with
      options from their assigned variant attribute values keyed by attribute slug (``{"size": "M"}``); a
      product with one plain variant becomes a product without variants;
    - stock from ``warehouse.stock`` ``quantity``; variants Saleor does not track (no stock record) get
      :data:`UNTRACKED_STOCK`;
    - assigned product attribute values → ``attributes`` (by attribute slug), except ``brand`` → ``brand``;
    - categories keep their tree as a path of names (``"Apparel/Shirts/T-shirts"``);
    - the description is ``description_plaintext``, else the Editor.js blocks' text with tags stripped;
    - the weight is the product's, else its product type's (Saleor's fallback); the type's slug is a tag;
    - SKUs: a variant's own SKU; products (and SKU-less variants) get ``SALEOR-<SLUG>``;
    - images are left out: Saleor's media are relative paths whose files are not in its repository.
    """
    by_model: dict[str, dict[Any, dict[str, Any]]] = defaultdict(dict)
    for record in records:
        by_model[record["model"]][record["pk"]] = dict(record["fields"])
    categories = by_model["product.category"]
    types = by_model["product.producttype"]
    attributes = by_model["attribute.attribute"]
    values = by_model["attribute.attributevalue"]
    usd = {pk for pk, c in by_model["channel.channel"].items() if c.get("currency_code") == "USD"}
    prices = {
        listing["variant"]: Decimal(str(listing["price_amount"])).quantize(CENT)
        for listing in by_model["product.productvariantchannellisting"].values()
        if listing["channel"] in usd and listing.get("price_amount") is not None
    }
    stock: dict[int, int] = defaultdict(int)
    for row in by_model["warehouse.stock"].values():
        stock[row["product_variant"]] += int(row["quantity"])
    assignments = by_model["attribute.assignedvariantattribute"]
    options: dict[int, dict[str, str]] = defaultdict(dict)
    for assigned in sorted(by_model["attribute.assignedvariantattributevalue"].values(), key=_order):
        value = values[assigned["value"]]
        variant = assignments[assigned["assignment"]]["variant"]
        options[variant][attributes[value["attribute"]]["slug"]] = value["name"]
    product_values: dict[int, dict[str, str]] = defaultdict(dict)
    for assigned in sorted(by_model["attribute.assignedproductattributevalue"].values(), key=_order):
        value = values[assigned["value"]]
        product_values[assigned["product"]][attributes[value["attribute"]]["slug"]] = value["name"]
    variants: dict[int, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for pk, variant in by_model["product.productvariant"].items():
        variants[variant["product"]].append((pk, variant))

    converted = []
    for pk, product in sorted(by_model["product.product"].items()):
        own = sorted(variants[pk], key=lambda v: (v[1].get("sort_order") or 0, v[0]))
        listed = [(vpk, v) for vpk, v in own if vpk in prices]
        if not listed:
            continue
        product_type = types[product["product_type"]]
        sku = f"SALEOR-{product['slug'].upper()}"[:64]
        price = min(prices[vpk] for vpk, _ in listed)
        attrs = dict(product_values[pk])
        brand = attrs.pop("brand", None)
        item: dict[str, Any] = {
            "name": product["name"],
            "sku": sku,
            "price": str(price),
            "description": _description(product),
            "category": _category_path(categories, product.get("category")),
            "tags": [product_type["slug"]],
            "attributes": attrs,
            "status": "active",
        }
        if brand:
            item["brand"] = brand
        weight = _grams(product.get("weight")) or _grams(product_type.get("weight"))
        if weight:
            item["weight_grams"] = weight
        has_variants = product_type.get("has_variants") or any(options.get(vpk) for vpk, _ in listed)
        if has_variants and (len(listed) > 1 or options.get(listed[0][0])):
            item["variants"] = [
                {
                    "sku": v.get("sku") or f"{sku}-{n}"[:64],
                    "name": v.get("name") if v.get("sku") else None,
                    "options": options.get(vpk, {}),
                    "price_modifier": str(prices[vpk] - price),
                    "stock": _stock(vpk, v, stock),
                }
                for n, (vpk, v) in enumerate(listed, start=1)
            ]
        else:
            item["stock"] = _stock(listed[0][0], listed[0][1], stock)
        converted.append(item)
    return converted


def _order(fields: Mapping[str, Any]) -> tuple[int, int]:
    return (fields.get("sort_order") or 0, int(fields.get("value") or 0))


def _stock(pk: int, variant: Mapping[str, Any], stock: Mapping[int, int]) -> int:
    if pk in stock:
        return stock[pk]
    return 0 if variant.get("track_inventory", True) else UNTRACKED_STOCK


def _category_path(categories: Mapping[Any, Mapping[str, Any]], pk: Any) -> str | None:
    names: list[str] = []
    seen: set[Any] = set()
    while pk is not None and pk in categories and pk not in seen:
        seen.add(pk)
        names.append(categories[pk]["name"].replace("/", "-"))
        pk = categories[pk].get("parent")
    return "/".join(reversed(names)) or None


def _description(product: Mapping[str, Any]) -> str | None:
    text = (product.get("description_plaintext") or "").strip()
    if not text and isinstance(product.get("description"), dict):
        blocks = product["description"].get("blocks") or []
        parts = [_TAG.sub("", str((b.get("data") or {}).get("text") or "")).strip() for b in blocks]
        text = "\n\n".join(p for p in parts if p)
    return text or None


def _grams(weight: Any) -> int | None:
    """Saleor's ``"1000.0:g"`` → ``1000``; ``None`` for no weight or zero."""
    if not isinstance(weight, str) or ":" not in weight:
        return None
    amount, unit = weight.split(":", 1)
    factor = _GRAMS.get(unit.strip().lower())
    if factor is None:
        return None
    grams = int((Decimal(amount) * factor).to_integral_value(rounding=ROUND_HALF_EVEN))
    return grams or None


# --- generated products -------------------------------------------------------------------------------------

_ADJECTIVES = (
    "Classic", "Deluxe", "Essential", "Everyday", "Compact", "Premium", "Vintage", "Urban", "Travel",
    "Studio", "Signature", "Eco", "Pro", "Lite", "Limited", "Heritage", "Modern", "Rugged", "Soft", "Bold",
)  # fmt: skip
_EDITIONS = ("", "", "", "II", "Plus", "Mini", "Max", "2026 Edition", "Set of 2", "XL")
_EXTRA_TAGS = ("new", "bestseller", "gift", "sale", "eco", "limited", "bundle", "popular", "trending")


def generated_sku(number: int) -> str:
    """The SKU of generated product ``number`` (from 1): ``GEN-00001``."""
    return f"{GENERATED_PREFIX}{number:05d}"


def generated_products(base: Sequence[Mapping[str, Any]], numbers: Iterable[int]) -> list[dict[str, Any]]:
    """Generated products ``numbers`` (1-based), each derived from one product of ``base`` by a random
    generator seeded with its number, so product *n* is the same on every run whatever the count asked for."""
    products = []
    for number in numbers:
        rng = random.Random(f"mercato-demo-{number}")  # noqa: S311 - sample data, not security
        source = base[rng.randrange(len(base))]
        sku = generated_sku(number)
        edition = rng.choice(_EDITIONS)
        name = f"{rng.choice(_ADJECTIVES)} {source['name']}{' ' + edition if edition else ''}"[:300]
        factor = Decimal(rng.randint(60, 160)) / 100
        price = max(Decimal("0.50"), (Decimal(str(source["price"])) * factor).quantize(CENT))
        extra = rng.sample(_EXTRA_TAGS, rng.randint(0, 2))
        tags = list(dict.fromkeys([*source.get("tags", []), *extra]))[:50]
        category = source.get("category")
        if rng.random() < 0.1:
            category = base[rng.randrange(len(base))].get("category") or category
        item: dict[str, Any] = {
            "name": name,
            "sku": sku,
            "price": str(price),
            "description": source.get("description"),
            "category": category,
            "tags": tags,
            "rating": str(Decimal(rng.randint(100, 500)) / 100),
            "rating_count": rng.randint(0, 400),
            "images": source.get("images", []),
            "attributes": source.get("attributes", {}),
            "status": "active",
        }
        for key in ("brand", "weight_grams", "specifications"):
            if source.get(key):
                item[key] = source[key]
        if source.get("variants"):
            item["variants"] = [
                {
                    "sku": f"{sku}-{n}",
                    "name": variant.get("name"),
                    "options": variant.get("options", {}),
                    "price_modifier": variant.get("price_modifier", "0"),
                    "stock": rng.choice((0, rng.randint(1, 25), rng.randint(25, 400))),
                }
                for n, variant in enumerate(source["variants"], start=1)
            ]
        else:
            item["stock"] = rng.choice((0, rng.randint(1, 25), rng.randint(25, 500), rng.randint(25, 500)))
        products.append(item)
    return products
