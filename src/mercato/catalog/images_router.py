"""``POST /api/v1/products/{id}/images``, ``DELETE /api/v1/products/{id}/images/{image_id}`` and the
``/media`` mount that serves stored files (API.md "Catalog", §1 size limits).

An upload is either ``multipart/form-data`` with the image in the field ``file`` (and an optional ``alt``
field), or JSON ``{"data_url": "data:image/png;base64,...", "alt": "..."}`` (source 002). The order of the
work: the body, read with a cap (413 as soon as 5 MiB is passed for multipart; JSON bodies are capped at 8 MB
by the middleware and the data URL's decoded size is checked before decoding) → permission (401/403) →
decoding and re-encoding in a worker thread (413/415) → only then the database (product check, files, row).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, status
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import Field
from starlette.datastructures import UploadFile
from starlette.responses import Response
from starlette.types import Message, Receive, Scope

from mercato.catalog import images
from mercato.catalog.errors import ImageNotFound, PayloadTooLarge, ProductNotFound, UnsupportedMediaType
from mercato.catalog.schemas import ImageRead
from mercato.config import Settings
from mercato.errors import Forbidden, ValidationFailed
from mercato.identity.models import Role
from mercato.identity.principal import Principal
from mercato.platform.storage import LocalStorage, storage_for
from mercato.schemas import RequestModel
from mercato.web.deps import SessionDep, require
from mercato.web.problems import problems

router = APIRouter(tags=["catalog"])
Manager = Annotated[Principal, Depends(require(Role.vendor))]

#: Room for the multipart envelope (boundaries, part headers, the ``alt`` field) on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024
MAX_ALT = 300
MEDIA_CACHE_CONTROL = "public, max-age=86400"


class ImageDataUrl(RequestModel):
    """A JSON upload: the image as a base64 ``data:`` URL (its declared type is ignored: the content is
    decoded to find the real format)."""

    model_config = RequestModel.model_config | {
        "json_schema_extra": {"examples": [{"data_url": "data:image/png;base64,iVBORw0KGgo...", "alt": "Front"}]}
    }

    data_url: str = Field(min_length=1, max_length=8 * 1024 * 1024, description="`data:<type>;base64,<data>`")
    alt: str | None = Field(default=None, max_length=MAX_ALT, description="Alternative text")


_MULTIPART_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "JPEG, PNG, GIF or WebP, ≤ 5 MiB",
                    },
                    "alt": {"type": "string", "maxLength": MAX_ALT},
                },
            }
        }
    },
}


class MultipartUploadRoute(APIRoute):
    """A route whose body is JSON (parsed and documented by FastAPI as usual) *or* a multipart upload, which
    this class reads itself, before FastAPI's body handling: streamed and capped (:func:`_read_multipart`),
    the result left in ``request.state.multipart_upload`` as ``(bytes, alt)``. FastAPI then sees an empty
    body. Any other content type → 415."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, preceded by the multipart step."""
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if content_type == "multipart/form-data":
                request.state.multipart_upload = await _read_multipart(request)
                request = Request(request.scope, _drained(request.receive))
            elif content_type and content_type != "application/json" and not content_type.endswith("+json"):
                raise UnsupportedMediaType("Send multipart/form-data with the field `file`, or JSON {data_url, alt}.")
            return await handler(request)

        return route


async def upload_image(
    product_id: str,
    request: Request,
    session: SessionDep,
    principal: Manager,
    body: ImageDataUrl | None = None,
) -> ImageRead:
    """Multipart (field `file`, optional `alt`) or JSON `{data_url, alt?}`. The image must really be a JPEG,
    PNG, GIF or WebP (decoded to check; the file name and declared type do not matter), at most 5 MiB
    (5,242,880 bytes; 413 as soon as the body passes it, before decoding) and at most 40 megapixels (413 from
    the header, before the pixels are decoded: decompression bombs). Anything that is not such an image → 415.
    Metadata (EXIF, XMP, comments) is stripped, EXIF orientation applied, animated images keep their first
    frame; a WebP thumbnail of at most 320 px is made. Admins, or vendors for their own products."""
    if body is not None:
        data, alt = images.decode_data_url(body.data_url), body.alt or None
    elif (upload := getattr(request.state, "multipart_upload", None)) is not None:
        data, alt = upload
    else:
        raise ValidationFailed("Send multipart/form-data with the field `file`, or JSON {data_url, alt}.")
    prepared = await images.prepare(data)  # worker thread; the database is not touched yet
    image = await images.add_image(session, principal, product_id, prepared, alt=alt)
    return ImageRead.model_validate(image)


router.add_api_route(
    "/products/{product_id}/images",
    upload_image,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    response_model=ImageRead,
    responses=problems(PayloadTooLarge, UnsupportedMediaType, Forbidden, ProductNotFound, ValidationFailed),
    summary="Upload a product image",
    openapi_extra={"requestBody": _MULTIPART_BODY},
    route_class_override=MultipartUploadRoute,
)


@router.delete(
    "/products/{product_id}/images/{image_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(Forbidden, ProductNotFound, ImageNotFound),
    summary="Delete a product image",
)
async def delete_image(product_id: str, image_id: uuid.UUID, session: SessionDep, principal: Manager) -> None:
    """Removes the image; its files (and thumbnail) are deleted once the change is committed."""
    await images.delete_image(session, principal, product_id, image_id)


# --- reading a multipart body -------------------------------------------------------------------------------


async def _read_multipart(request: Request) -> tuple[bytes, str | None]:
    """The image bytes and alt text of a multipart upload, parsed while counting the body's bytes: past 5 MiB
    plus :data:`MULTIPART_OVERHEAD` the read stops with 413 (so does a ``Content-Length`` announcing more);
    the file part itself must be ≤ 5 MiB.

    Raises:
        PayloadTooLarge: see above.
        ValidationFailed: no single ``file`` part, an unknown field, or ``alt`` longer than 300 characters.
    """
    limit = images.MAX_IMAGE_BYTES + MULTIPART_OVERHEAD
    too_large = f"The image is larger than {images.MAX_IMAGE_BYTES} bytes."
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(too_large)
    received = 0
    receive = request.receive

    async def capped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(too_large)
        return message

    form = await Request(request.scope, capped).form(max_files=2, max_fields=5)
    try:
        unknown = sorted(set(form.keys()) - {"file", "alt"})
        if unknown:
            raise ValidationFailed(f"Unknown field {unknown[0]!r}.", field=unknown[0])
        files = form.getlist("file")
        upload = files[0] if len(files) == 1 else None
        if not isinstance(upload, UploadFile):
            raise ValidationFailed("Send exactly one image in the multipart field `file`.", field="file")
        alt = form.get("alt")
        if alt is not None and (not isinstance(alt, str) or len(alt.strip()) > MAX_ALT or "\x00" in alt):
            raise ValidationFailed(f"alt must be text of at most {MAX_ALT} characters, without NUL.", field="alt")
        data = await upload.read(images.MAX_IMAGE_BYTES + 1)
        if len(data) > images.MAX_IMAGE_BYTES:
            raise PayloadTooLarge(too_large)
        return data, (alt.strip() or None) if isinstance(alt, str) else None
    finally:
        await form.close()


def _drained(receive: Receive) -> Receive:
    """A ``receive`` whose body is empty (it was consumed already); later calls (disconnect) go to
    ``receive``."""
    sent = False

    async def empty() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return empty


# --- serving stored files -----------------------------------------------------------------------------------


class MediaFiles(StaticFiles):
    """Static files of the local media storage. A stored file never changes (every upload gets a new key), so
    responses may be cached for a day; ``ETag``/``Last-Modified`` come from Starlette."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        """Starlette's response plus ``Cache-Control``."""
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.setdefault("cache-control", MEDIA_CACHE_CONTROL)
        return response


def mount_media(app: FastAPI, settings: Settings) -> None:
    """Serve the local media directory (``<data dir>/media``, created if missing) at ``/media``. With object
    storage (``MERCATO_STORAGE_URL=s3://...``) nothing is mounted (``/media`` is 404): files are served from the
    bucket's public URL.

    Raises:
        StorageUnavailable: S3 is configured but boto3 is not installed, so the app refuses to start.
    """
    storage = storage_for(settings)
    if not isinstance(storage, LocalStorage):
        return
    storage.root.mkdir(parents=True, exist_ok=True)
    app.mount(storage.base_url, MediaFiles(directory=storage.root, check_dir=False), name="media")
