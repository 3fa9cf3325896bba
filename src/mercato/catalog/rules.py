"""Pure catalog rules: slugs, variant prices, stock of a product, descendant sets. No I/O."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal

#: Words that are path segments under /products and /categories, so never a slug (API.md "Catalog").
RESERVED_SLUGS = frozenset({"search", "deleted", "bulk", "category", "similar", "restore", "new"})
CENT = Decimal("0.01")
#: Characters a generated slug leaves free under its column for a ``-2`` ... ``-999999`` suffix.
SUFFIX_ROOM = 7


def slugify(text: str, *, max_length: int = 280) -> str:
    """Lower-case ASCII words joined by hyphens (``"Café Crème"`` → ``"cafe-creme"``); ``"item"`` if empty."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:max_length].strip("-")
    slug = slug or "item"
    return f"{slug}-item" if slug in RESERVED_SLUGS else slug


def variant_price(product_price: Decimal, price_modifier: Decimal) -> Decimal:
    """``product.price + price_modifier``, never below zero, to the cent (API.md "Catalog")."""
    return max(Decimal("0"), product_price + price_modifier).quantize(CENT)


def product_stock(own_available: int | None, variant_available: Iterable[int], has_variants: bool) -> int:
    """Available units shown on a product: the sum over its variants when it has them, else its own."""
    if has_variants:
        return sum(max(0, n) for n in variant_available)
    return max(0, own_available or 0)


def descendants(root: uuid.UUID, parent_of: Mapping[uuid.UUID, uuid.UUID | None]) -> set[uuid.UUID]:
    """``root`` and every category below it, given each category's parent."""
    children: dict[uuid.UUID | None, list[uuid.UUID]] = {}
    for node, parent in parent_of.items():
        children.setdefault(parent, []).append(node)
    found = {root}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found
