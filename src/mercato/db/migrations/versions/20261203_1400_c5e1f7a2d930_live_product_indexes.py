"""live product indexes

The listing indexes become partial indexes over live products: ``(status, <sort column>, id) WHERE deleted_at
IS NULL`` in place of ``(status, deleted_at, <sort column>, id)``. PostgreSQL does not treat ``deleted_at IS
NULL`` as fixing that column, so it could not read the old indexes in sort order and sorted every live product
for each page (17 ms for 3,000 products; 0.1 ms with the partial index). SQLite reads both kinds in order.

Revision ID: c5e1f7a2d930
Revises: a4d7c2e9b813
Create Date: 2026-12-03 14:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c5e1f7a2d930"
down_revision: str | None = "a4d7c2e9b813"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SORT_COLUMNS = ("created_at", "price", "name")
LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    for column in SORT_COLUMNS:
        op.drop_index(f"ix_products_listing_{column}", table_name="products")
        op.create_index(
            f"ix_products_live_{column}",
            "products",
            ["status", column, "id"],
            postgresql_where=LIVE,
            sqlite_where=LIVE,
        )


def downgrade() -> None:
    for column in SORT_COLUMNS:
        op.drop_index(f"ix_products_live_{column}", table_name="products")
        op.create_index(f"ix_products_listing_{column}", "products", ["status", "deleted_at", column, "id"])
