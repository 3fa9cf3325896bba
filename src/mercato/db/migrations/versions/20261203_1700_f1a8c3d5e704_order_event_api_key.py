"""order event api key

A change of an order made with an API key (which belongs to no user) appended its ``order_events`` row with no
actor at all. ``order_events.api_key_id`` names the key, as ``audit_logs.api_key_id`` does; ``refunds.api_key_id``
keeps the key a refund was asked for with, so its ``order.refunded`` event names it even when the gateway
decides the refund later. Rows written before this revision have none.

Revision ID: f1a8c3d5e704
Revises: e4f9a3c7b215
Create Date: 2026-12-03 17:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f1a8c3d5e704"
down_revision: str | None = "e4f9a3c7b215"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("order_events") as batch:
        batch.add_column(sa.Column("api_key_id", sa.Uuid(), nullable=True))
    with op.batch_alter_table("refunds") as batch:
        batch.add_column(sa.Column("api_key_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("refunds") as batch:
        batch.drop_column("api_key_id")
    with op.batch_alter_table("order_events") as batch:
        batch.drop_column("api_key_id")
