"""audit api key

An action taken with an API key (which belongs to no user) was recorded with no actor at all. ``api_key_id``
names the key.

Revision ID: b7e3d1f08a52
Revises: c5e1f7a2d930
Create Date: 2026-12-03 16:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7e3d1f08a52"
down_revision: str | None = "c5e1f7a2d930"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_logs") as batch:
        batch.add_column(sa.Column("api_key_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_logs") as batch:
        batch.drop_column("api_key_id")
