"""job claim token

``jobs.claim``: a token written when a runner claims a job and required by every write of that run (the
heartbeat that extends ``locked_until``, the delete on success, the requeue or ``dead`` on failure). A run that
outlived its lease and lost the job to another runner then changes nothing. Jobs claimed before this revision
have none; the next claim sets it.

Revision ID: e4f9a3c7b215
Revises: d2b7e4a1c618
Create Date: 2026-12-03 16:40:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e4f9a3c7b215"
down_revision: str | None = "d2b7e4a1c618"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("claim", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("claim")
