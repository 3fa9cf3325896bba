"""Inventory's problem types."""

from mercato.errors import Conflict, DomainError


class InsufficientStock(Conflict):
    """Fewer units are available (or on hand) than the change needs. Raised with ``product_id``, ``variant_id``
    (None for a product without variants) and ``available`` in the problem body when one unit is to blame."""

    code = "insufficient-stock"
    title = "Not enough stock"


class BatchFailed(DomainError):
    """At least one adjustment of ``POST /inventory/batch`` failed; nothing was changed. ``errors`` lists each
    failure as ``{index, status, type, detail}`` (the same shape as ``POST /products/bulk``)."""

    status = 422
    code = "validation-error"
    title = "Batch failed"
