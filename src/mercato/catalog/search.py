"""Product search (API.md "Catalog": ``GET /products/search`` and ``GET /products/{id}/similar``).

The index holds one row per live (not soft-deleted) product of any status — staff may search drafts; the
public sees ``active`` products only, through the list filters — made of its name, brand, tags, category
name and description. :func:`reindex` rebuilds rows inside the caller's transaction, so a search right after
a write sees it (API.md §1 "Reads see writes"). The index objects are created by the ``product_search``
migration and are not SQLAlchemy models: :func:`include_name` keeps them out of the models/migrations
comparison.

SQLite
    ``product_search`` is an FTS5 table (tokenizer ``unicode61 remove_diacritics 2``) ranked with ``bm25``:
    name 10, brand, tags and category 4, description 1. Its rowids come from ``product_search_keys`` (an
    integer per product, removed with the product by a foreign key whose trigger drops the FTS row), so a
    product's row is replaced by rowid rather than found by a scan. Typos: a word that no indexed word starts
    with is replaced by the nearest words of the index vocabulary (``product_search_vocab``, an ``fts5vocab``
    table) within :func:`max_edits` edits (a transposition is one edit), found with rapidfuzz.
PostgreSQL
    ``product_search(product_id, document, keywords)``: ``document`` is a ``tsvector`` (configuration
    ``simple``, accents removed with ``unaccent``) weighting name A, brand/tags/category B and description C,
    GIN-indexed and ranked with ``ts_rank_cd``. Typos: a word that no indexed word starts with matches through
    pg_trgm word similarity (≥ :data:`WORD_SIMILARITY`) against ``keywords`` (name, brand, tags and category;
    GIN trigram index).

User text never reaches either query language as syntax: it is cut into words (letters and digits), and each
word is quoted before it goes into a query (bound as a parameter, never spliced into SQL).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from rapidfuzz import process
from rapidfuzz.distance import OSA
from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    TextClause,
    Uuid,
    bindparam,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import column, table

from mercato.catalog import repository
from mercato.catalog.models import Product, ProductStatus

#: Tables of the search index (the FTS5 shadow tables included): not models, ignored by model/migration diffs.
INDEX_TABLES = frozenset(
    {
        "product_search",
        "product_search_keys",
        "product_search_vocab",
        "product_search_data",
        "product_search_idx",
        "product_search_content",
        "product_search_docsize",
        "product_search_config",
    }
)
RELEVANCE = "relevance"
MAX_WORDS = 16
MAX_CORRECTIONS = 5
#: pg_trgm ``word_similarity`` a misspelt word needs with a product's keywords (PostgreSQL).
WORD_SIMILARITY = 0.5
_CHUNK = 500
_WORD = re.compile(r"[^\W_]+")

_INDEX = table("product_search", column("product_id"), column("document"), column("keywords"))
_KEYS = table("product_search_keys", column("id"), column("product_id"))
_FTS_ROWID: ColumnElement[Any] = literal_column("product_search.rowid")
_BM25: ColumnElement[Any] = literal_column("-bm25(product_search, 0.0, 10.0, 4.0, 4.0, 4.0, 1.0)")
_TS_WEIGHTS: ColumnElement[Any] = literal_column("'{0.1, 0.2, 0.4, 1.0}'::float4[]")  # D, C, B, A
_SIMPLE: ColumnElement[Any] = literal_column("'simple'")


def _ids_param(statement: str) -> TextClause:
    return text(statement).bindparams(bindparam("ids", expanding=True, type_=Uuid()))


_SQLITE_REINDEX = (
    # deleting a key row fires the trigger that deletes its FTS row
    _ids_param("DELETE FROM product_search_keys WHERE product_id IN :ids"),
    _ids_param(
        "INSERT INTO product_search_keys (product_id) SELECT id FROM products WHERE id IN :ids AND deleted_at IS NULL"
    ),
    _ids_param(
        """
        INSERT INTO product_search (rowid, product_id, name, brand, tags, category, description)
        SELECT k.id, p.id, p.name, coalesce(p.brand, ''),
               coalesce((SELECT group_concat(t.value, ' ') FROM json_each(p.tags) AS t), ''),
               coalesce(c.name, ''), coalesce(p.description, '')
        FROM products AS p
        JOIN product_search_keys AS k ON k.product_id = p.id
        LEFT JOIN categories AS c ON c.id = p.category_id AND c.deleted_at IS NULL
        WHERE p.id IN :ids AND p.deleted_at IS NULL
        """
    ),
)
_SQLITE_VOCABULARY = text("SELECT term FROM product_search_vocab WHERE length(term) BETWEEN :shortest AND :longest")
_POSTGRES_REINDEX = (
    _ids_param(
        """
        DELETE FROM product_search AS s
        WHERE s.product_id IN :ids
          AND NOT EXISTS (SELECT 1 FROM products AS p WHERE p.id = s.product_id AND p.deleted_at IS NULL)
        """
    ),
    _ids_param(
        """
        INSERT INTO product_search (product_id, document, keywords)
        SELECT p.id,
               setweight(to_tsvector('simple', unaccent(p.name)), 'A')
               || setweight(to_tsvector('simple', unaccent(concat_ws(' ', p.brand, t.tags, c.name))), 'B')
               || setweight(to_tsvector('simple', unaccent(coalesce(p.description, ''))), 'C'),
               lower(unaccent(concat_ws(' ', p.name, p.brand, t.tags, c.name)))
        FROM products AS p
        CROSS JOIN LATERAL (
            SELECT string_agg(value, ' ') AS tags
            FROM json_array_elements_text(CASE WHEN json_typeof(p.tags) = 'array' THEN p.tags END)
        ) AS t
        LEFT JOIN categories AS c ON c.id = p.category_id AND c.deleted_at IS NULL
        WHERE p.id IN :ids AND p.deleted_at IS NULL
        ON CONFLICT (product_id) DO UPDATE SET document = excluded.document, keywords = excluded.keywords
        """
    ),
)


@dataclass(frozen=True)
class Hits:
    """One page of search results: product ids in result order, and how many products match in all."""

    ids: list[uuid.UUID]
    total: int


def include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """Alembic's ``include_name`` hook: leave the search index's tables out of model/migration comparisons.

    Args:
        name: the reflected object's name.
        type_: ``"table"``, ``"column"``, ``"index"`` ...
        parent_names: unused (Alembic passes the schema and table names).

    Returns:
        False for the tables in :data:`INDEX_TABLES`, True for everything else.
    """
    return not (type_ == "table" and name in INDEX_TABLES)


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


# --- keeping the index in sync ------------------------------------------------------------------------------


async def reindex(session: AsyncSession, product_ids: Iterable[uuid.UUID]) -> None:
    """Rebuild the index rows of these products from the ``products`` table, in the caller's transaction.

    Pending ORM changes are flushed first. A product that is soft-deleted or gone loses its row; every other
    one gets a row from its current name, brand, tags, category name (when the category is live) and
    description.

    Args:
        session: the request's (write) session; nothing is committed here.
        product_ids: the products whose searchable data may have changed (duplicates are fine).

    Raises:
        sqlalchemy.exc.DBAPIError: the database refused a statement (the caller rolls back).

    Source: ARCHITECTURE.md "Reads see writes" (the full-text index is updated in the same transaction).
    """
    ids = list(dict.fromkeys(product_ids))
    if not ids:
        return
    await session.flush()
    statements = _SQLITE_REINDEX if _dialect(session) == "sqlite" else _POSTGRES_REINDEX
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        for statement in statements:
            await session.execute(statement, {"ids": chunk})


async def reindex_categories(session: AsyncSession, category_ids: Iterable[uuid.UUID]) -> None:
    """Rebuild the index rows of the live products directly in these categories (after a rename, a restore, or
    products moved into them).

    Args:
        session: the request's (write) session.
        category_ids: the categories whose products to reindex.

    Source: the catalog issue (a category rename reindexes its products).
    """
    wanted = list(category_ids)
    if not wanted:
        return
    await session.flush()
    product_ids = await session.scalars(
        select(Product.id).where(Product.category_id.in_(wanted), Product.deleted_at.is_(None))
    )
    await reindex(session, list(product_ids))


# --- searching ----------------------------------------------------------------------------------------------


def words(query: str) -> list[str]:
    """The searchable words of ``query``: runs of letters and digits, lower-cased, accents removed, without
    repeats, at most :data:`MAX_WORDS`. Anything else (quotes, ``*``, ``(``, ``-``, SQL) only separates words.

    >>> words('"NEAR( Café-crème *')
    ['near', 'cafe', 'creme']
    """
    decomposed = unicodedata.normalize("NFKD", query.lower())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return list(dict.fromkeys(_WORD.findall(plain)))[:MAX_WORDS]


def max_edits(word: str) -> int:
    """How many edits a misspelt word may be from the word meant: none below 4 letters, 1 up to 7, else 2."""
    if len(word) < 4:
        return 0
    return 1 if len(word) < 8 else 2


def corrections(word: str, vocabulary: Iterable[str]) -> list[str]:
    """The words of ``vocabulary`` nearest to ``word`` within :func:`max_edits` edits (optimal string
    alignment distance: an insertion, deletion, substitution or transposition of neighbours is one edit), at
    most :data:`MAX_CORRECTIONS`, alphabetically. Pure function; no I/O.

    >>> corrections("hoodei", ["hood", "hoodie", "hoodies", "monospace"])
    ['hoodie']

    Source: the catalog issue ("a one-letter slip still finds the product").
    """
    limit = max_edits(word)
    if limit == 0:
        return []
    found = process.extract(word, list(vocabulary), scorer=OSA.distance, score_cutoff=limit, limit=None)
    if not found:
        return []
    best = min(distance for _, distance, _ in found)
    return sorted(candidate for candidate, distance, _ in found if distance == best)[:MAX_CORRECTIONS]


def _quoted(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


async def _sqlite_query(session: AsyncSession, query_words: list[str]) -> str | None:
    """The FTS5 query for ``product_search MATCH``: each word a quoted prefix, or when no indexed word starts
    with it, its corrections; None when some word matches nothing at all."""
    parts: list[str] = []
    vocabulary: list[str] | None = None
    for word in query_words:
        prefix = _quoted(word) + "*"
        known = await session.scalar(
            text("SELECT 1 FROM product_search WHERE product_search MATCH :query LIMIT 1"), {"query": prefix}
        )
        if known is not None:
            parts.append(prefix)
            continue
        if vocabulary is None:
            vocabulary = list(
                await session.scalars(
                    _SQLITE_VOCABULARY,
                    {
                        "shortest": min(len(w) for w in query_words) - 2,
                        "longest": max(len(w) for w in query_words) + 2,
                    },
                )
            )
        fixes = corrections(word, vocabulary)
        if not fixes:
            return None
        parts.append("(" + " OR ".join(_quoted(fix) for fix in fixes) + ")")
    return " AND ".join(parts)


async def _postgres_condition(
    session: AsyncSession, query_words: list[str]
) -> tuple[list[ColumnElement[bool]], ColumnElement[Any]] | None:
    """Conditions and score: words that start an indexed word must all match the tsvector (as prefixes); each
    other word must be similar enough to the keywords (pg_trgm). None when a short word matches nothing.

    The words go through ``unaccent`` like the documents did, then are cut into words again: ``unaccent`` may
    turn a letter into punctuation (``ŉ`` → ``'n``), and only letters and digits may reach ``to_tsquery``."""
    plain = await session.scalar(text("SELECT unaccent(:words)"), {"words": " ".join(query_words)})
    plain_words = words(str(plain or ""))
    if not plain_words:
        return None
    known: list[str] = []
    fuzzy: list[str] = []
    for word in plain_words:
        prefix = f"'{word}':*"  # letters and digits only: nothing to escape
        found = await session.scalar(
            text("SELECT EXISTS (SELECT 1 FROM product_search WHERE document @@ to_tsquery('simple', :query))"),
            {"query": prefix},
        )
        if found:
            known.append(prefix)
        elif max_edits(word) == 0:
            return None
        else:
            fuzzy.append(word)
    conditions: list[ColumnElement[bool]] = []
    score: ColumnElement[Any] = literal_column("0.0")
    if known:
        tsquery = func.to_tsquery(_SIMPLE, " & ".join(known))
        conditions.append(_INDEX.c.document.op("@@")(tsquery))
        score = func.ts_rank_cd(_TS_WEIGHTS, _INDEX.c.document, tsquery)
    if fuzzy:
        await session.execute(
            text("SELECT set_config('pg_trgm.word_similarity_threshold', :threshold, true)"),
            {"threshold": str(WORD_SIMILARITY)},
        )
    for word in fuzzy:
        term = bindparam(None, word, type_=String())
        conditions.append(term.op("<%")(_INDEX.c.keywords))
        score = score + func.word_similarity(term, _INDEX.c.keywords)
    return conditions, score


async def search(
    session: AsyncSession,
    query: str,
    filters: repository.ProductFilter,
    *,
    sort: str = RELEVANCE,
    page: int = 1,
    limit: int = 20,
) -> Hits:
    """Products matching the words of ``query`` (see :func:`words`) and ``filters``, one page of them.

    Every word must match a product's name, brand, tags, category or description, as a word prefix; a word
    that starts no indexed word is corrected (see the module docstring). A query without words matches
    nothing.

    Args:
        session: any session (read-only is enough).
        query: the user's text, as typed; no character of it is search syntax.
        filters: the list filters (statuses included) as for ``GET /products``; ``q`` and ``ids`` are ignored.
        sort: ``relevance`` (best first), or a key of :data:`mercato.catalog.repository.SORTS`, ``-`` in front
            for descending; ties are broken by product id.
        page: 1-based page number.
        limit: products per page.

    Returns:
        The ids of the page's products in result order and the number of matching products.

    Raises:
        KeyError: ``sort`` is neither ``relevance`` nor a key of ``SORTS`` (the router allows no other).

    Source: API.md "Catalog", ``GET /products/search`` (ranking name > brand/tags > description, prefixes,
    typos, list filters).
    """
    query_words = words(query)
    if not query_words:
        return Hits([], 0)
    listed = replace(filters, q=None, ids=None)
    params = repository.filter_params(listed)
    paging = {"limit": limit, "offset": (page - 1) * limit}
    if _dialect(session) == "sqlite":
        page_query, count_query = _sqlite_statements(repository.filtered(listed), sort)
        # Most searches use words the index holds: the words as prefixes are tried first, and each word is
        # checked (and corrected) only when that finds nothing. Every word of a query that finds something starts
        # an indexed word, so the answer is the one the checked query gives.
        params["fts_query"] = " AND ".join(_quoted(word) + "*" for word in query_words)
        rows = (await session.execute(page_query, params | paging)).all()
        if not rows:
            fts_query = await _sqlite_query(session, query_words)
            if fts_query is None:
                return Hits([], 0)
            if fts_query != params["fts_query"]:
                params["fts_query"] = fts_query
                rows = (await session.execute(page_query, params | paging)).all()
    else:
        found = await _postgres_condition(session, query_words)
        if found is None:
            return Hits([], 0)
        conditions, score = found
        matching = repository.filtered(listed).join(_INDEX, _INDEX.c.product_id == Product.id).where(*conditions)
        page_query, count_query = _statements(matching, score, sort)
        rows = (await session.execute(page_query, params | paging)).all()
    if rows:
        return Hits([row[0] for row in rows], int(rows[0][1]))
    if page == 1:
        return Hits([], 0)
    return Hits([], int(await session.scalar(count_query, params) or 0))  # past the end: count apart


@lru_cache(maxsize=256)
def _sqlite_statements(filtered: Select[Any], sort: str) -> tuple[Select[Any], Select[Any]]:
    """:func:`_statements` on SQLite, built once per filter shape (``repository.filtered`` returns one statement
    per shape) and sort; the FTS5 query is the bind parameter ``fts_query``.

    The matches are found and scored first, from the FTS rowid through the integer keys (reading ``product_id``
    from the FTS table costs more than the ranking); MATERIALIZED keeps SQLite from driving the join from the
    products' status index instead. SQLite allows ``bm25()`` in no query that has a window function."""
    hits = (
        select(_KEYS.c.product_id.label("id"), _BM25.label("score"))
        .select_from(_INDEX.join(_KEYS, _KEYS.c.id == _FTS_ROWID))
        .where(literal_column("product_search").op("MATCH")(bindparam("fts_query")))
        .cte("hits")
        .prefix_with("MATERIALIZED")
    )
    return _statements(filtered.join(hits, hits.c.id == Product.id), hits.c.score, sort)


def _statements(matching: Select[Any], score: ColumnElement[Any], sort: str) -> tuple[Select[Any], Select[Any]]:
    """The page of ``matching`` products (ids and the count of all matches, bind parameters ``limit`` and
    ``offset``) in ``sort`` order, and the count alone (for a page past the end)."""
    matching = matching.with_only_columns(Product.id)
    key = score if sort == RELEVANCE else repository.SORTS[sort.lstrip("-")]
    # scored in a subquery, counted and paged outside it: the count of all matches comes with the page (ranking
    # them has visited every match anyway)
    ranked = matching.add_columns(key.label("sort_key")).subquery("ranked")
    descending = sort == RELEVANCE or sort.startswith("-")
    tiebreak = ranked.c.id.desc() if descending and sort != RELEVANCE else ranked.c.id.asc()
    page_query = (
        select(ranked.c.id, func.count().over().label("total"))
        .order_by(ranked.c.sort_key.desc() if descending else ranked.c.sort_key.asc(), tiebreak)
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )
    return page_query, select(func.count()).select_from(matching.subquery())


async def similar(session: AsyncSession, product: Product, *, limit: int) -> list[uuid.UUID]:
    """Active products like ``product``: those of its category (or, when it has none, those sharing a tag
    with it), most shared tags first (case-insensitive), then best-selling, then by id. The product itself is
    left out.

    Args:
        session: any session.
        product: the product to find neighbours for.
        limit: at most this many ids.

    Returns:
        Product ids, best first.

    Source: API.md "Catalog", ``GET /products/{id}/similar`` (same-category products ranked by shared tags).
    """
    tags = sorted({str(tag).lower() for tag in product.tags or []})
    if product.category_id is None and not tags:
        return []
    shared: ColumnElement[Any]
    if tags:
        if _dialect(session) == "sqlite":
            elements = func.json_each(Product.tags).table_valued("value", name="tag")
        else:
            array: ColumnElement[Any] = literal_column(
                "CASE WHEN json_typeof(products.tags) = 'array' THEN products.tags END"
            )
            elements = func.json_array_elements_text(array).table_valued("value", name="tag")
        tag = func.lower(elements.c.value)
        shared = select(func.count(tag.distinct())).select_from(elements).where(tag.in_(tags)).scalar_subquery()
    else:
        shared = literal_column("0")
    filters = repository.ProductFilter(
        category_ids={product.category_id} if product.category_id is not None else None,
        statuses=(ProductStatus.active,),
    )
    query = repository.filtered(filters).with_only_columns(Product.id).where(Product.id != product.id)
    if product.category_id is None:
        query = query.where(shared > 0)
    query = query.order_by(shared.desc(), Product.units_sold_30d.desc(), Product.id.asc()).limit(limit)
    return list(await session.scalars(query, repository.filter_params(filters)))
