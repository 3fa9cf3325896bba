"""product search

The full-text index of products (see ``mercato.catalog.search``), filled from the existing products.
SQLite: an FTS5 table whose rowids come from ``product_search_keys`` (a key row goes with its product, and a
trigger takes the FTS row with it), plus an ``fts5vocab`` table over its vocabulary for typo correction.
PostgreSQL: a table of ``tsvector`` documents with a GIN index, and a pg_trgm GIN index on the keywords for
typos (extensions ``pg_trgm`` and ``unaccent``, which the downgrade leaves: other objects may use them).

Revision ID: f91c9507c444
Revises: 55a70a801964
Create Date: 2026-11-22 07:35:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "f91c9507c444"
down_revision: str | None = "55a70a801964"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_UP = [
    """
    CREATE TABLE product_search_keys (
        id INTEGER NOT NULL,
        product_id CHAR(32) NOT NULL,
        CONSTRAINT pk_product_search_keys PRIMARY KEY (id),
        CONSTRAINT uq_product_search_keys_product_id UNIQUE (product_id),
        CONSTRAINT fk_product_search_keys_product_id_products FOREIGN KEY (product_id)
            REFERENCES products (id) ON DELETE CASCADE
    )
    """,
    """
    CREATE VIRTUAL TABLE product_search USING fts5(
        product_id UNINDEXED, name, brand, tags, category, description,
        tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3'
    )
    """,
    "CREATE VIRTUAL TABLE product_search_vocab USING fts5vocab(product_search, 'row')",
    """
    CREATE TRIGGER product_search_keys_delete AFTER DELETE ON product_search_keys
    BEGIN
        DELETE FROM product_search WHERE rowid = old.id;
    END
    """,
    "INSERT INTO product_search_keys (product_id) SELECT id FROM products WHERE deleted_at IS NULL",
    """
    INSERT INTO product_search (rowid, product_id, name, brand, tags, category, description)
    SELECT k.id, p.id, p.name, coalesce(p.brand, ''),
           coalesce((SELECT group_concat(t.value, ' ') FROM json_each(p.tags) AS t), ''),
           coalesce(c.name, ''), coalesce(p.description, '')
    FROM products AS p
    JOIN product_search_keys AS k ON k.product_id = p.id
    LEFT JOIN categories AS c ON c.id = p.category_id AND c.deleted_at IS NULL
    """,
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS product_search_keys_delete",
    "DROP TABLE IF EXISTS product_search_vocab",
    "DROP TABLE IF EXISTS product_search",
    "DROP TABLE IF EXISTS product_search_keys",
]
POSTGRES_UP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE EXTENSION IF NOT EXISTS unaccent",
    """
    CREATE TABLE product_search (
        product_id UUID NOT NULL,
        document TSVECTOR NOT NULL,
        keywords TEXT NOT NULL,
        CONSTRAINT pk_product_search PRIMARY KEY (product_id),
        CONSTRAINT fk_product_search_product_id_products FOREIGN KEY (product_id)
            REFERENCES products (id) ON DELETE CASCADE
    )
    """,
    "CREATE INDEX ix_product_search_document ON product_search USING gin (document)",
    "CREATE INDEX ix_product_search_keywords ON product_search USING gin (keywords gin_trgm_ops)",
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
    WHERE p.deleted_at IS NULL
    """,
]
POSTGRES_DOWN = ["DROP TABLE IF EXISTS product_search"]


def upgrade() -> None:
    for statement in SQLITE_UP if op.get_bind().dialect.name == "sqlite" else POSTGRES_UP:
        op.execute(statement)


def downgrade() -> None:
    for statement in SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else POSTGRES_DOWN:
        op.execute(statement)
