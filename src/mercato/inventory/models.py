"""Stock tables: one ``inventory_items`` row per product without variants and one per variant.

``available = on_hand - reserved`` is never negative: a ``CHECK`` constraint holds it in the database, and every
change is a single conditional ``UPDATE`` (ARCHITECTURE.md), never read-then-write.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from mercato.db.base import Base, uuid_pk
from mercato.platform import clock


class InventoryItem(Base):
    """Stock of one sellable unit: a product without variants (``variant_id`` null) or one variant."""

    __tablename__ = "inventory_items"
    __table_args__ = (
        CheckConstraint("on_hand >= 0", name="on_hand_not_negative"),
        CheckConstraint("reserved >= 0", name="reserved_not_negative"),
        CheckConstraint("on_hand - reserved >= 0", name="available_not_negative"),
        Index(
            "uq_inventory_items_product_no_variant",
            "product_id",
            unique=True,
            sqlite_where=text("variant_id IS NULL"),
            postgresql_where=text("variant_id IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), index=True)
    variant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("product_variants.id", ondelete="CASCADE"), unique=True
    )
    sku: Mapped[str | None] = mapped_column(String(64))
    on_hand: Mapped[int] = mapped_column(default=0)
    reserved: Mapped[int] = mapped_column(default=0)
    reorder_point: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=clock.now, onupdate=clock.now)


class InventoryHistory(Base):
    """One change of a unit's stock (API.md "Inventory"): ``delta`` moves on hand, ``reserved_delta`` moves the
    reservations; ``on_hand_after`` / ``reserved_after`` are the unit's counts right after the change.

    ``reason`` says why (``adjustment``, ``order.placed``, ``order.cancelled``, ``order.paid``, ``restock`` ...
    or the staff member's own words), ``reference`` what caused it (an order number, an adjustment batch id),
    ``actor_id`` who (null for the system). Rows are only ever appended.
    """

    __tablename__ = "inventory_history"

    id: Mapped[uuid.UUID] = uuid_pk()
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), index=True)
    variant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("product_variants.id", ondelete="CASCADE"))
    delta: Mapped[int] = mapped_column(default=0)
    reserved_delta: Mapped[int] = mapped_column(default=0)
    on_hand_after: Mapped[int]
    reserved_after: Mapped[int]
    reason: Mapped[str] = mapped_column(String(200))
    reference: Mapped[str | None] = mapped_column(String(100), index=True)
    actor_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(default=clock.now, index=True)
