"""Catalog's problem types."""

from mercato.errors import Conflict, DomainError, NotFound, ValidationFailed


class ProductNotFound(NotFound):
    """No visible product with that id or slug."""

    title = "Product not found"


class CategoryNotFound(NotFound):
    """No category with that id or slug."""

    title = "Category not found"


class DuplicateValue(Conflict):
    """A SKU or slug is already used."""

    title = "Already in use"


class CategoryCycle(Conflict):
    """A category cannot be moved under itself or one of its descendants."""

    title = "Category cycle"


class VariantInUse(Conflict):
    """Orders not yet delivered, cancelled or returned have lines of the variant: they may still move its stock."""

    title = "Variant is in unfinished orders"


class CategoryInUse(Conflict):
    """The category still holds products; pass ``reassign_to``."""

    title = "Category has products"


class UnknownCategory(ValidationFailed):
    """``category_id`` names no live category."""


class BulkFailed(DomainError):
    """At least one bulk operation failed; nothing was written. ``errors`` lists each failure by index."""

    status = 422
    code = "validation-error"
    title = "Bulk operation failed"


class PayloadTooLarge(DomainError):
    """An uploaded image is over 5 MiB (refused before decoding) or over 40 megapixels (refused from its
    header, before its pixels are decoded: a decompression bomb)."""

    status = 413
    code = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(DomainError):
    """The upload is not a JPEG, PNG, GIF or WebP image (checked by decoding, whatever its name or declared
    type), or the request is neither ``multipart/form-data`` nor JSON."""

    status = 415
    code = "unsupported-media-type"
    title = "Unsupported media type"


class ImageNotFound(NotFound):
    """The product has no image with that id."""

    title = "Image not found"
