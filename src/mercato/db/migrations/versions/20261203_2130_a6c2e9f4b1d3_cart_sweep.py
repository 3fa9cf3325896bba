"""cart sweep

Expired carts are deleted by the job runners' hourly ``cart.sweep`` (one indexed query over ``carts.expires_at``)
instead of one durable ``cart.expire`` job per cart. Every guest's first add used to insert a job row that lived
30 days; the queued ones are deleted here, as no handler runs them any more. A downgrade gives every cart its job
back, due at its ``expires_at``.

Revision ID: a6c2e9f4b1d3
Revises: f1a8c3d5e704
Create Date: 2026-12-03 21:30:00.000000+00:00
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "a6c2e9f4b1d3"
down_revision: str | None = "f1a8c3d5e704"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JOBS = sa.table(
    "jobs",
    sa.column("id", sa.Uuid()),
    sa.column("name", sa.String()),
    sa.column("payload", sa.JSON()),
    sa.column("status", sa.String()),
    sa.column("attempts", sa.Integer()),
    sa.column("run_at", sa.DateTime(timezone=True)),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_CARTS = sa.table("carts", sa.column("id", sa.Uuid()), sa.column("expires_at", sa.DateTime(timezone=True)))


def upgrade() -> None:
    op.execute(_JOBS.delete().where(_JOBS.c.name == "cart.expire"))


def downgrade() -> None:
    connection = op.get_bind()
    now = datetime.now(UTC)
    if connection.dialect.name == "sqlite":  # stored without a zone, as mercato.db.base.UTCDateTime does
        now = now.replace(tzinfo=None)
    for cart_id, expires_at in connection.execute(sa.select(_CARTS.c.id, _CARTS.c.expires_at)):
        connection.execute(
            _JOBS.insert().values(
                id=uuid.uuid4(),
                name="cart.expire",
                payload={"cart_id": str(cart_id)},
                status="queued",
                attempts=0,
                run_at=expires_at,
                created_at=now,
            )
        )
