"""Product images (API.md "Catalog": ``POST /products/{id}/images``,
``DELETE /products/{id}/images/{image_id}``; uploads as multipart or base64 data URLs, source 002).

An upload goes through two steps, in this order:

1. :func:`prepare` — with no database work yet (SQLite has one writer, ARCHITECTURE.md): the bytes are
   decoded with Pillow in a worker thread. Only JPEG, PNG, GIF and WebP are accepted, recognised from the
   content, never from a file name or a declared content type. Limits: at most :data:`MAX_IMAGE_BYTES`
   (5 MiB) and :data:`MAX_IMAGE_PIXELS` (40 megapixels). The pixel limit is checked on the header, before
   any pixel is decoded, so a decompression bomb (a 100-megapixel PNG of a few KB) is refused with **413**
   ``payload-too-large`` like an oversized file. The image is then re-encoded in its own format, which drops
   every piece of metadata (EXIF — after applying its orientation —, XMP, comments, text chunks; the ICC
   colour profile and palette transparency are kept, they are colour data). Animated GIF and WebP keep their
   **first frame only** (a still image: bounded decoding cost, and what a product page shows). A thumbnail
   (WebP, at most :data:`THUMBNAIL_SIZE` px on its longer side) is made from the same pixels.
2. :func:`add_image` — in the request's transaction: checks the product and the caller's right to change it,
   writes both files through :mod:`mercato.platform.storage` and adds the ``product_images`` row. If the
   transaction then fails (an error, a failed ``COMMIT``), the files are deleted again: no orphan files.

:func:`delete_image` removes the row; its files are deleted only after the deletion commits.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import anyio
from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.catalog import cache, repository
from mercato.catalog import service as catalog_service
from mercato.catalog.errors import ImageNotFound, PayloadTooLarge, UnsupportedMediaType
from mercato.catalog.models import ProductImage
from mercato.errors import ValidationFailed
from mercato.identity.principal import Principal
from mercato.platform import clock
from mercato.platform.context import services_of
from mercato.platform.storage import delete_after_commit, discard_unless_committed, storage_for

MAX_IMAGE_BYTES = 5 * 1024 * 1024
"""Largest accepted image file, in bytes (5 MiB), for multipart uploads and decoded data URLs alike."""
MAX_IMAGE_PIXELS = 40_000_000
"""Largest accepted image, in pixels (width × height of the canvas)."""
THUMBNAIL_SIZE = 320
"""Longer side of a thumbnail, in pixels (smaller images are not enlarged)."""
MAX_CONCURRENT_DECODES = 2
"""Images decoded at once per process: a 40-megapixel RGBA image needs about 160 MB per copy."""

#: Pillow format name → (content type, file extension) of the accepted formats.
FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "GIF": ("image/gif", "gif"),
    "WEBP": ("image/webp", "webp"),
}
#: Pillow formats stored as one of :data:`FORMATS`: an MPO (multi-picture JPEG, as many phone cameras write) is
#: a JPEG whose first frame is the picture; the JPEG decoder opens it and Pillow names it "MPO".
ALIASES: dict[str, str] = {"MPO": "JPEG"}
THUMBNAIL_CONTENT_TYPE = "image/webp"
_RGB_MODES = ("RGB", "RGBA", "P", "PA")  # an ICC profile of these is an RGB one, valid for an RGB thumbnail

# Pillow's own decompression-bomb guard (process-wide), aligned with our limit: Image.open raises
# DecompressionBombError above twice the limit and warns above it; the warning is made an error, so Image.open
# refuses any header over the limit before a pixel is decoded. process_image() checks the size again itself
# (_check_pixels), so the limit holds even if something else changes these globals.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

_decode_limiter = anyio.CapacityLimiter(MAX_CONCURRENT_DECODES)
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class PreparedImage:
    """A verified, re-encoded image and its thumbnail, ready to store.

    ``format`` is Pillow's name (``JPEG``, ``PNG``, ``GIF``, ``WEBP``); ``width``/``height`` are in pixels,
    after the EXIF orientation was applied; ``data`` is the clean file in the original format, ``thumbnail``
    a WebP file.
    """

    format: str
    content_type: str
    extension: str
    width: int
    height: int
    data: bytes
    thumbnail: bytes


# --- verifying and re-encoding (no database) ---------------------------------------------------------------


def decode_data_url(value: str) -> bytes:
    """The bytes of a base64 ``data:`` URL (``data:image/png;base64,iVBOR...``).

    The declared media type is ignored (the content is verified by decoding it later). The decoded size is
    computed from the length of the text and checked before decoding.

    Raises:
        ValidationFailed: not a base64 data URL, or invalid base64 (422, field ``data_url``).
        PayloadTooLarge: it would decode to more than :data:`MAX_IMAGE_BYTES` (413).
    """
    header, comma, payload = value.partition(",")
    if not comma or header[:5].lower() != "data:" or not header.lower().endswith(";base64"):
        raise ValidationFailed("data_url must be a base64 data URL: data:<type>;base64,<data>.", field="data_url")
    if _WHITESPACE.search(payload):
        payload = _WHITESPACE.sub("", payload)
    padding = len(payload) - len(payload.rstrip("="))
    if len(payload) // 4 * 3 - padding > MAX_IMAGE_BYTES:
        raise PayloadTooLarge(f"The image is larger than {MAX_IMAGE_BYTES} bytes.")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationFailed("data_url does not hold valid base64 data.", field="data_url") from exc


def process_image(data: bytes) -> PreparedImage:
    """Verify ``data`` is a JPEG, PNG, GIF or WebP image within the limits, strip its metadata and make its
    thumbnail. Blocking and CPU-heavy: call it through :func:`prepare` from async code. An MPO (a JPEG with
    more pictures after the first, from phone cameras) is kept as a JPEG of its first picture.

    Raises:
        PayloadTooLarge: more than :data:`MAX_IMAGE_BYTES` bytes, or more than :data:`MAX_IMAGE_PIXELS` pixels
            (known from the header, before decoding pixels).
        UnsupportedMediaType: not one of the four formats, or the file cannot be decoded (truncated, corrupt).
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise PayloadTooLarge(f"The image is larger than {MAX_IMAGE_BYTES} bytes.")
    try:
        with _open(data) as source:
            _check_pixels(*source.size)
            source.load()  # decodes the first frame only
            _check_pixels(*source.size)
            fmt = ALIASES.get(str(source.format), str(source.format))  # an MPO is stored as its first frame, a JPEG
            frame = ImageOps.exif_transpose(source)  # a copy, upright
            icc = source.info.get("icc_profile")
            transparency = source.info.get("transparency")
        clean = _without_metadata(frame, fmt)
        if clean.mode != frame.mode:
            icc = transparency = None  # converted: the profile (and a transparent colour) no longer apply
        content_type, extension = FORMATS[fmt]
        return PreparedImage(
            format=fmt,
            content_type=content_type,
            extension=extension,
            width=clean.width,
            height=clean.height,
            data=_encode(clean, fmt, icc=icc, transparency=transparency),
            thumbnail=_thumbnail(clean, icc=icc if clean.mode in _RGB_MODES else None, transparency=transparency),
        )
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"The image has more than {MAX_IMAGE_PIXELS // 1_000_000} megapixels.") from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedMediaType("The file is not a JPEG, PNG, GIF or WebP image.") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise UnsupportedMediaType("The image could not be decoded (truncated or corrupt).") from exc


async def prepare(data: bytes) -> PreparedImage:
    """:func:`process_image` in a worker thread (at most :data:`MAX_CONCURRENT_DECODES` at once). Run it
    before the request's transaction touches the database. Raises as :func:`process_image`."""
    return await anyio.to_thread.run_sync(process_image, data, limiter=_decode_limiter)


def _open(data: bytes) -> Image.Image:
    """Read the header only (Pillow is lazy); the formats are restricted to the four we accept."""
    return Image.open(io.BytesIO(data), formats=list(FORMATS))


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise PayloadTooLarge(
            f"The image is {width}×{height} pixels ({width * height / 1_000_000:.1f} megapixels); "
            f"the limit is {MAX_IMAGE_PIXELS // 1_000_000} megapixels."
        )


def _without_metadata(image: Image.Image, fmt: str) -> Image.Image:
    """The pixels (and palette) of ``image`` with an empty ``info``, in a mode ``fmt`` can store."""
    if fmt == "JPEG" and image.mode not in ("L", "RGB", "CMYK"):
        image = image.convert("RGB")
    elif fmt == "WEBP" and image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    clean = image.copy()
    clean.info = {}
    return clean


def _has_alpha(image: Image.Image, transparency: Any = None) -> bool:
    return (
        image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or transparency is not None or ("transparency" in image.info)
    )


def _encode(image: Image.Image, fmt: str, *, icc: Any, transparency: Any) -> bytes:
    options: dict[str, Any] = {}
    if icc and fmt in ("JPEG", "PNG", "WEBP"):
        options["icc_profile"] = icc
    if transparency is not None and fmt in ("PNG", "GIF") and image.mode in ("P", "L", "RGB", "I", "1"):
        options["transparency"] = transparency
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = 90
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _thumbnail(image: Image.Image, *, icc: Any, transparency: Any) -> bytes:
    if transparency is not None and image.mode in ("P", "L", "RGB", "I", "1"):
        image = image.copy()
        image.info["transparency"] = transparency  # so the conversion below turns it into alpha
    thumb = image.convert("RGBA" if _has_alpha(image, transparency) else "RGB")
    thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    options: dict[str, Any] = {"quality": 80}
    if icc:
        options["icc_profile"] = icc
    thumb.save(out, format="WEBP", **options)
    return out.getvalue()


def thumbnail_key(key: str) -> str:
    """The storage key of an image's thumbnail: ``products/<p>/<i>.jpg`` → ``products/<p>/<i>-thumb.webp``."""
    return f"{key.rsplit('.', 1)[0]}-thumb.webp"


# --- use cases (the request's session; never commit) -------------------------------------------------------


async def add_image(
    session: AsyncSession, principal: Principal, id_or_slug: str, image: PreparedImage, *, alt: str | None
) -> ProductImage:
    """Store a prepared image and its thumbnail and append it to the product's images (last ``position``).

    The files are written before the row is flushed and deleted again if the transaction does not commit.
    Cached catalog reads are invalidated after commit, so ``GET /products/{id}`` shows the image at once.

    Raises:
        Forbidden: the caller is neither an admin nor a vendor (403).
        ProductNotFound: no such live product, or another vendor's (404).
    """
    product = await catalog_service.owned_product(session, principal, id_or_slug)
    await repository.product(session, product.id, for_update=True)  # serialises positions (PostgreSQL)
    position = await repository.max_image_position(session, product.id) + 1
    image_id = clock.new_id()
    storage = storage_for(services_of(session).settings)
    key = f"products/{product.id}/{image_id}.{image.extension}"
    thumb_key = thumbnail_key(key)
    discard_unless_committed(session, storage, [key, thumb_key])
    url = await anyio.to_thread.run_sync(storage.save, key, image.data, image.content_type)
    thumbnail_url = await anyio.to_thread.run_sync(storage.save, thumb_key, image.thumbnail, THUMBNAIL_CONTENT_TYPE)
    now = clock.now()
    row = ProductImage(
        id=image_id,
        product_id=product.id,
        url=url,
        thumbnail_url=thumbnail_url,
        alt=alt,
        position=position,
        width=image.width,
        height=image.height,
        storage_key=key,
        created_at=now,
    )
    product.images.append(row)
    product.updated_at = now
    await session.flush()
    cache.invalidate_after_commit(session)
    return row


async def delete_image(session: AsyncSession, principal: Principal, id_or_slug: str, image_id: uuid.UUID) -> None:
    """Remove an image from a product; its stored files (image and thumbnail) are deleted after commit. An
    image that only links to a remote URL (no ``storage_key``) has no files to delete.

    Raises:
        Forbidden: the caller is neither an admin nor a vendor (403).
        ProductNotFound: no such live product, or another vendor's (404).
        ImageNotFound: the product has no image with that id (404).
    """
    product = await catalog_service.owned_product(session, principal, id_or_slug)
    image = next((i for i in product.images if i.id == image_id), None)
    if image is None:
        raise ImageNotFound(f"Product {id_or_slug!r} has no image {image_id}.")
    product.images.remove(image)
    product.updated_at = clock.now()
    await session.flush()
    if image.storage_key:
        storage = storage_for(services_of(session).settings)
        delete_after_commit(session, storage, [image.storage_key, thumbnail_key(image.storage_key)])
    cache.invalidate_after_commit(session)
