"""Imports every domain's models so that ``Base.metadata`` knows all tables (Alembic and tests use this)."""

from mercato.audit import models as audit_models
from mercato.cart import models as cart_models
from mercato.catalog import models as catalog_models
from mercato.db.base import Base
from mercato.identity import models as identity_models
from mercato.inventory import models as inventory_models
from mercato.orders import models as order_models
from mercato.payments import models as payment_models
from mercato.payments.gateways import test as test_gateway
from mercato.platform import idempotency, jobs
from mercato.promotions import models as promotion_models
from mercato.shipping import models as shipping_models

metadata = Base.metadata

__all__ = [
    "audit_models",
    "cart_models",
    "catalog_models",
    "idempotency",
    "identity_models",
    "inventory_models",
    "jobs",
    "metadata",
    "order_models",
    "payment_models",
    "promotion_models",
    "shipping_models",
    "test_gateway",
]
