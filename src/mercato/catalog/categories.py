"""Category and attribute use cases: the tree (list, nest, move without cycles), soft delete with reassignment,
restore; attribute definitions and their allowed values."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.audit import service as audit_service
from mercato.catalog import cache, repository, rules, search
from mercato.catalog.errors import CategoryCycle, CategoryInUse, CategoryNotFound, DuplicateValue
from mercato.catalog.models import Attribute, AttributeValue, Category
from mercato.catalog.schemas import (
    AttributeCreate,
    AttributeRead,
    AttributeValueRead,
    CategoryCreate,
    CategoryRead,
    CategoryUpdate,
)
from mercato.db.queries import Paged, add_unique
from mercato.errors import NotFound, ValidationFailed
from mercato.platform import clock

#: Lengths of the slug columns (``categories.slug``, ``attributes.slug``, ``attribute_values.slug``).
CATEGORY_SLUG_LENGTH, ATTRIBUTE_SLUG_LENGTH, VALUE_SLUG_LENGTH = 200, 100, 200
_INSERT_ATTEMPTS = 3  # a generated slug taken by concurrent creations is made again this many times at most


async def tree(session: AsyncSession) -> list[CategoryRead]:
    """The live categories nested under their parents (``children`` filled), roots first by position."""
    nodes = {
        c.id: CategoryRead.model_validate(c).model_copy(update={"children": []})
        for c in await repository.categories(session)
    }
    roots: list[CategoryRead] = []
    for node in nodes.values():
        parent = nodes.get(node.parent_id) if node.parent_id else None
        if parent is not None and parent.children is not None:
            parent.children.append(node)
        else:
            roots.append(node)
    return roots


async def flat(session: AsyncSession, *, deleted: bool = False) -> Sequence[Category]:
    """Live (or deleted) categories by position, then name."""
    return await repository.categories(session, deleted=deleted)


async def get(session: AsyncSession, id_or_slug: str) -> Category:
    """A live category by id or slug.

    Raises:
        CategoryNotFound.
    """
    category = await repository.category(session, id_or_slug)
    if category is None:
        raise CategoryNotFound(f"No category {id_or_slug!r}.")
    return category


async def create(session: AsyncSession, body: CategoryCreate) -> Category:
    """Create a category. A slug made from the name that a concurrent creation takes first is made again
    (``-2``...); a given slug taken that way is a 409 like one taken before.

    Raises:
        UnknownCategory-like ValidationFailed (``parent_id`` unknown), DuplicateValue (slug taken).
    """
    if body.parent_id is not None and await repository.category(session, body.parent_id) is None:
        raise ValidationFailed(f"No category {body.parent_id}.", field="parent_id")
    slug = body.slug or await _free_slug(session, body.name)
    if await repository.slug_taken(session, Category, slug):
        raise DuplicateValue(f"The slug {slug!r} is already used.")
    now = clock.now()
    category = Category(
        id=clock.new_id(),
        name=body.name,
        slug=slug,
        description=body.description,
        parent_id=body.parent_id,
        image_url=body.image_url,
        position=body.position,
        created_at=now,
        updated_at=now,
    )
    for _ in range(_INSERT_ATTEMPTS):
        if await add_unique(session, category):
            break
        if body.slug is not None:
            raise DuplicateValue(f"The slug {slug!r} is already used.")
        category.slug = await _free_slug(session, body.name)
    else:
        raise DuplicateValue("The generated slug was taken by concurrent creations; try again.")
    cache.invalidate_after_commit(session)
    return category


async def update(session: AsyncSession, id_or_slug: str, body: CategoryUpdate) -> Category:
    """Partially update a category; a new ``parent_id`` may not be the category or one of its descendants.

    Raises:
        CategoryNotFound, ValidationFailed (unknown parent), CategoryCycle (409), DuplicateValue (slug taken,
        also when a concurrent change took it after the check).
    """
    category = await get(session, id_or_slug)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("name") is None and "name" in changes:
        raise ValidationFailed("name cannot be null.", field="name")
    if "parent_id" in changes and changes["parent_id"] is not None:
        parent_id = changes["parent_id"]
        if await repository.category(session, parent_id) is None:
            raise ValidationFailed(f"No category {parent_id}.", field="parent_id")
        if parent_id in rules.descendants(category.id, await repository.category_parents(session)):
            raise CategoryCycle("A category cannot be moved under itself or one of its descendants.")
    if changes.get("slug") and await repository.slug_taken(session, Category, changes["slug"], exclude=category.id):
        raise DuplicateValue(f"The slug {changes['slug']!r} is already used.")
    kept = {name: value for name, value in changes.items() if not (name == "slug" and value is None)}
    if not await repository.apply_unique(session, category, {**kept, "updated_at": clock.now()}):
        raise DuplicateValue(f"The slug {changes.get('slug')!r} is already used.")  # taken by a concurrent change
    if "name" in changes:
        await search.reindex_categories(session, [category.id])
    cache.invalidate_after_commit(session)
    return category


async def delete(session: AsyncSession, id_or_slug: str, *, reassign_to: str | None) -> None:
    """Soft-delete a category and its subcategories.

    Products in them block the deletion (409) unless ``reassign_to`` names a live category outside the deleted
    subtree, which receives them. Raises:
        CategoryNotFound, CategoryInUse, ValidationFailed (bad ``reassign_to``).
    """
    category = await get(session, id_or_slug)
    subtree = rules.descendants(category.id, await repository.category_parents(session))
    if await repository.products_in_categories(session, subtree):
        if reassign_to is None:
            raise CategoryInUse("The category holds products; pass ?reassign_to=<category id> to move them.")
        target = await repository.category(session, reassign_to)
        if target is None or target.id in subtree:
            raise ValidationFailed(
                "reassign_to must name a live category outside the deleted one.", loc=["query", "reassign_to"]
            )
        await repository.reassign_products(session, subtree, target.id)
        await search.reindex_categories(session, [target.id])
    now = clock.now()
    for node in await repository.categories(session):
        if node.id in subtree:
            node.deleted_at = now
            node.updated_at = now
    audit_service.record(
        session,
        "category.deleted",
        "category",
        category.id,
        {"name": category.name, "subtree": len(subtree), "reassigned_to": reassign_to},
    )
    cache.invalidate_after_commit(session)


async def restore(session: AsyncSession, id_or_slug: str) -> Category:
    """Restore a deleted category with the subcategories deleted together with it, i.e. in the same
    :func:`delete` (same ``deleted_at``); a subcategory deleted on its own before stays deleted, and so does its
    subtree. The restored nodes keep their parents; a category whose parent is still deleted becomes a root.

    Slugs need no check: a deleted category keeps its slug (the unique constraint covers deleted rows too, and
    :func:`create`/:func:`update` refuse a slug a deleted category holds), so no live category can have taken it.

    Raises:
        CategoryNotFound.
    """
    category = await repository.category(session, id_or_slug, deleted=True)
    if category is None:
        raise CategoryNotFound(f"No deleted category {id_or_slug!r}.")
    deleted_together = {
        node.id: node
        for node in await repository.categories(session, deleted=True)
        if node.deleted_at == category.deleted_at
    }
    subtree = rules.descendants(category.id, {node.id: node.parent_id for node in deleted_together.values()})
    if category.parent_id is not None and await repository.category(session, category.parent_id) is None:
        category.parent_id = None
    now = clock.now()
    for node_id in subtree:
        deleted_together[node_id].deleted_at = None
        deleted_together[node_id].updated_at = now
    audit_service.record(
        session, "category.restored", "category", category.id, {"name": category.name, "subtree": len(subtree)}
    )
    await search.reindex_categories(session, subtree)
    cache.invalidate_after_commit(session)
    return category


async def _free_slug(session: AsyncSession, name: str) -> str:
    """A slug made from ``name`` that no category uses, cut so that it fits its column with a ``-n`` suffix."""
    base = rules.slugify(name, max_length=CATEGORY_SLUG_LENGTH - rules.SUFFIX_ROOM)
    taken = await repository.slugs_like(session, Category, base)
    n = 2
    slug = base
    while slug in taken:
        slug = f"{base}-{n}"
        n += 1
    return slug


# --- attributes -----------------------------------------------------------------------------------------------


async def list_attributes(session: AsyncSession, *, page: int, limit: int) -> Paged[AttributeRead]:
    """Attribute definitions with their values."""
    found = await repository.attributes(session, page=page, limit=limit)
    values = await repository.attribute_values(session, [a.id for a in found.items])
    return Paged([_attribute_read(a, values) for a in found.items], found.total, page, limit)


async def create_attribute(session: AsyncSession, body: AttributeCreate) -> AttributeRead:
    """Create an attribute and its initial values.

    Raises:
        DuplicateValue: the slug is taken (found by the check, or by the unique constraint when a concurrent
            request created it after the check), or a value repeats.
    """
    slug = body.slug or rules.slugify(body.name, max_length=ATTRIBUTE_SLUG_LENGTH)

    if await repository.attribute_by_slug(session, slug) is not None:
        raise DuplicateValue(f"An attribute {slug!r} already exists.")
    now = clock.now()
    attribute = Attribute(id=clock.new_id(), name=body.name, slug=slug, created_at=now, updated_at=now)
    session.add(attribute)
    values = [_value(attribute.id, v, i) for i, v in enumerate(body.values)]
    if len({v.slug for v in values}) != len(values):
        raise DuplicateValue("A value appears twice.")
    session.add_all(values)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent request created the slug after the check (PostgreSQL)
        raise DuplicateValue(f"An attribute {slug!r} already exists.") from exc
    return _attribute_read(attribute, values)


async def add_value(session: AsyncSession, attribute_id: uuid.UUID, value: str) -> AttributeRead:
    """Add an allowed value to an attribute.

    Raises:
        NotFound (no such attribute), DuplicateValue (value exists).
    """
    attribute = await repository.attribute(session, attribute_id)
    if attribute is None:
        raise NotFound("No such attribute.")
    existing = list(await repository.attribute_values(session, [attribute.id]))
    new = _value(attribute.id, value, len(existing))
    taken = DuplicateValue(f"{value!r} is already a value of {attribute.name}.")
    if any(v.slug == new.slug for v in existing):
        raise taken
    session.add(new)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent request added the value after the check (PostgreSQL)
        raise taken from exc  # made before: a failed flush expires attribute, whose name could not load now
    return _attribute_read(attribute, [*existing, new])


async def values_of(session: AsyncSession, attribute_id: uuid.UUID) -> AttributeRead:
    """One attribute with its values.

    Raises:
        NotFound.
    """
    attribute = await repository.attribute(session, attribute_id)
    if attribute is None:
        raise NotFound("No such attribute.")
    return _attribute_read(attribute, await repository.attribute_values(session, [attribute.id]))


def _value(attribute_id: uuid.UUID, value: str, position: int) -> AttributeValue:
    return AttributeValue(
        id=clock.new_id(),
        attribute_id=attribute_id,
        value=value,
        slug=rules.slugify(value, max_length=VALUE_SLUG_LENGTH),
        position=position,
    )


def _attribute_read(attribute: Attribute, values: Sequence[AttributeValue]) -> AttributeRead:
    return AttributeRead(
        id=attribute.id,
        name=attribute.name,
        slug=attribute.slug,
        values=[AttributeValueRead.model_validate(v) for v in values if v.attribute_id == attribute.id],
    )
