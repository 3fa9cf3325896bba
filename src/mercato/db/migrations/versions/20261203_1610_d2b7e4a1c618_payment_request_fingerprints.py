"""payment request fingerprints

``payments.request_fingerprint`` and ``refunds.request_fingerprint``: the SHA-256 of the request (method, path,
canonical body) that recorded the attempt under an ``Idempotency-Key``. A failed or timed-out money POST releases
its key for a retry, but its attempt stays tied to the key; the fingerprint lets a retry with another body (another
order, card or amount) be refused with 422 ``idempotency-mismatch`` instead of finishing the first attempt. Rows
from before this revision have none and are not compared.

Revision ID: d2b7e4a1c618
Revises: b7e3d1f08a52
Create Date: 2026-12-03 16:10:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d2b7e4a1c618"
down_revision: str | None = "b7e3d1f08a52"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("payments", sa.Column("request_fingerprint", sa.String(length=64), nullable=True))
    op.add_column("refunds", sa.Column("request_fingerprint", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("refunds") as batch:
        batch.drop_column("request_fingerprint")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("request_fingerprint")
