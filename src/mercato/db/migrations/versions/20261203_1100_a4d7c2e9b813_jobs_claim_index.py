"""jobs claim index

The job runner claims the oldest queued job that is due (``status = 'queued' AND run_at <= now ORDER BY
run_at``). With only ``ix_jobs_status`` SQLite read every queued job — carts and reservations queue expiry jobs
due days or minutes ahead, tens of thousands on a busy store — and sorted them, inside the write transaction.
A composite index answers it in one seek.

Revision ID: a4d7c2e9b813
Revises: fc86ff023386
Create Date: 2026-12-03 11:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a4d7c2e9b813"
down_revision: str | None = "fc86ff023386"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_status_run_at", "jobs", ["status", "run_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_status_run_at", table_name="jobs")
