"""catalog read indexes

Composite indexes that serve the public product listing: the filter ``status = 'active' AND deleted_at IS
NULL`` followed by the sort column (``created_at``, the default sort, then ``price`` and ``name``) and ``id``,
the tie-breaker. A page of the listing then reads ``limit`` index entries in order instead of sorting every
active product, and counting the active products reads one index.

Revision ID: 5f0c898f20d0
Revises: b1c4d2e3f405
Create Date: 2026-12-03 09:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5f0c898f20d0"
down_revision: str | None = "b1c4d2e3f405"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_products_listing_created_at": ["status", "deleted_at", "created_at", "id"],
    "ix_products_listing_price": ["status", "deleted_at", "price", "id"],
    "ix_products_listing_name": ["status", "deleted_at", "name", "id"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "products", columns, unique=False)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="products")
