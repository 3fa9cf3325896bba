"""shipping and tax

Shipping methods (weight-based rates in integer cents, a free-over threshold, a delivery window in business days
and the countries they ship to as a JSON list, empty = worldwide) and the admin tax-rate table (a fraction per
country, or per region of a country, as ``NUMERIC(7, 6)``).

Revision ID: 7a3e5c1d9b20
Revises: 5f0c898f20d0
Create Date: 2026-12-03 10:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7a3e5c1d9b20"
down_revision: str | None = "5f0c898f20d0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shipping_methods",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("carrier", sa.String(length=100), nullable=False),
        sa.Column("base_rate", sa.BigInteger(), nullable=False),
        sa.Column("per_kg_rate", sa.BigInteger(), nullable=False),
        sa.Column("free_over", sa.BigInteger(), nullable=True),
        sa.Column("min_days", sa.Integer(), nullable=False),
        sa.Column("max_days", sa.Integer(), nullable=False),
        sa.Column("countries", sa.JSON(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("base_rate >= 0 AND per_kg_rate >= 0", name=op.f("ck_shipping_methods_rates_not_negative")),
        sa.CheckConstraint(
            "free_over IS NULL OR free_over >= 0", name=op.f("ck_shipping_methods_free_over_not_negative")
        ),
        sa.CheckConstraint("min_days >= 0 AND max_days >= min_days", name=op.f("ck_shipping_methods_delivery_window")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shipping_methods")),
    )
    op.create_table(
        "tax_rates",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("region", sa.String(length=100), nullable=True),
        sa.Column("rate", sa.Numeric(precision=7, scale=6), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("rate >= 0 AND rate < 1", name=op.f("ck_tax_rates_rate_is_fraction")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tax_rates")),
        sa.UniqueConstraint("country", "region", name=op.f("uq_tax_rates_country")),
    )


def downgrade() -> None:
    op.drop_table("tax_rates")
    op.drop_table("shipping_methods")
