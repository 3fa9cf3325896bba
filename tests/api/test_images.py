"""Product images: multipart and data-URL uploads, format verification by decoding, size and pixel limits,
metadata stripping, thumbnails, serving under /media, deletion, and refusals that change nothing.

Every image is made here with Pillow (or, for the decompression bomb, written byte by byte).
"""

from __future__ import annotations

import base64
import io
import random
import shutil
import sqlite3
import struct
import threading
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from mercato.catalog import images
from mercato.catalog.errors import PayloadTooLarge, UnsupportedMediaType
from mercato.catalog.models import ProductImage
from mercato.identity.models import Role, User
from mercato.identity.principal import Principal
from mercato.platform.context import Services
from tests.conftest import bearer, login, make_admin, register

P = "/api/v1/products"
EXIF_MAKE, EXIF_ORIENTATION, EXIF_ARTIST = 0x010F, 0x0112, 0x013B


# --- images -----------------------------------------------------------------------------------------------


def jpeg_with_exif(size: tuple[int, int] = (40, 20), orientation: int = 1) -> bytes:
    """A red JPEG carrying EXIF (camera make, artist, orientation)."""
    exif = Image.Exif()
    exif[EXIF_MAKE] = "SpyCam"
    exif[EXIF_ARTIST] = "Jane Secret"
    exif[EXIF_ORIENTATION] = orientation
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def png_with_text(size: tuple[int, int] = (1000, 500)) -> bytes:
    """A half-transparent RGBA PNG with a tEXt chunk naming its author."""
    info = PngInfo()
    info.add_text("Author", "Jane Secret")
    out = io.BytesIO()
    Image.new("RGBA", size, (10, 120, 200, 128)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def animated_gif() -> bytes:
    """Two frames, with a comment."""
    frames = [Image.new("P", (30, 30), color) for color in (1, 2)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0, comment=b"Jane Secret")
    return out.getvalue()


def mpo() -> bytes:
    """A two-picture MPO (what many phone cameras write): Pillow names its format "MPO", not "JPEG"."""
    frames = [Image.new("RGB", (48, 32), color) for color in ((200, 30, 30), (30, 30, 200))]
    out = io.BytesIO()
    frames[0].save(out, format="MPO", save_all=True, append_images=frames[1:])
    return out.getvalue()


def webp() -> bytes:
    exif = Image.Exif()
    exif[EXIF_ARTIST] = "Jane Secret"
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 160, 60)).save(out, "WEBP", exif=exif.tobytes())
    return out.getvalue()


def noise_png(min_bytes: int) -> bytes:
    """A real PNG of random pixels (incompressible), at least ``min_bytes`` long."""
    side = int((min_bytes / 3) ** 0.5) + 16
    pixels = random.Random(7).randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, "PNG", compress_level=1)
    data = out.getvalue()
    assert len(data) >= min_bytes
    return data


def png_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    """A valid 4-bit greyscale PNG of ``width`` × ``height`` black pixels: 100 megapixels in about 50 KB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" * (1 + (width + 1) // 2)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 4, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


# --- fixtures and helpers -----------------------------------------------------------------------------------


@pytest.fixture
async def admin(services: Services, client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await make_admin(services, client))


@pytest.fixture
def media(services: Services) -> Path:
    """The local media directory, emptied before the test."""
    root = services.settings.data_dir / "media"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


async def make_vendor(services: Services, client: httpx.AsyncClient) -> dict[str, str]:
    tokens = await register(client)
    async with services.db.session(write=True) as session:
        user = await session.get(User, uuid.UUID(tokens["user"]["id"]))
        assert user is not None
        user.role = "vendor"
    await services.cache.delete(f"user:{tokens['user']['id']}")
    return bearer(await login(client, tokens["user"]["email"]))


async def new_product(client: httpx.AsyncClient, who: dict[str, str]) -> dict[str, Any]:
    body = {"name": f"Lamp {uuid.uuid4().hex[:6]}", "price": "10.00", "status": "active"}
    response = await client.post(P, json=body, headers=who)
    assert response.status_code == 201, response.text
    return response.json()


async def upload(
    client: httpx.AsyncClient,
    product_id: str,
    who: dict[str, str],
    data: bytes,
    filename: str = "image.bin",
    content_type: str = "application/octet-stream",
    **fields: str,
) -> httpx.Response:
    return await client.post(
        f"{P}/{product_id}/images",
        files={"file": (filename, data, content_type)},
        data=fields or None,
        headers=who,
    )


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def stored(media: Path, url: str) -> Path:
    assert url.startswith("/media/")
    return media / url.removeprefix("/media/")


async def image_rows(services: Services) -> int:
    async with services.db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(ProductImage)) or 0)


# --- uploads ------------------------------------------------------------------------------------------------


async def test_multipart_jpeg_is_verified_stripped_turned_upright_and_served(
    client: httpx.AsyncClient, admin: dict[str, str], media: Path
) -> None:
    product = await new_product(client, admin)
    original = jpeg_with_exif((40, 20), orientation=6)  # "rotate 90° clockwise to display"
    # the name and declared type say PNG: the content decides
    response = await upload(client, product["id"], admin, original, "holiday.png", "image/png", alt="Front")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "url", "thumbnail_url", "alt", "position", "width", "height"}
    assert (body["alt"], body["position"], body["width"], body["height"]) == ("Front", 0, 20, 40)
    assert body["url"] == f"/media/products/{product['id']}/{body['id']}.jpg"
    assert body["thumbnail_url"] == f"/media/products/{product['id']}/{body['id']}-thumb.webp"

    file = stored(media, body["url"])
    raw = file.read_bytes()
    with Image.open(file) as saved:
        assert (saved.format, saved.size) == ("JPEG", (20, 40))
        assert "exif" not in saved.info
        assert dict(saved.getexif()) == {}
    assert b"SpyCam" not in raw and b"Jane Secret" not in raw and b"Exif" not in raw

    served = await client.get(body["url"])
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/jpeg"
    assert served.content == raw
    thumb = await client.get(body["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(thumb.content)) as small:
        assert (small.format, small.size) == ("WEBP", (20, 40))  # small images are not enlarged


async def test_an_mpo_from_a_phone_camera_is_stored_as_a_jpeg_of_its_first_picture(
    client: httpx.AsyncClient, admin: dict[str, str], media: Path
) -> None:
    product = await new_product(client, admin)
    original = mpo()
    with Image.open(io.BytesIO(original)) as opened:
        assert (opened.format, opened.n_frames) == ("MPO", 2)
    response = await upload(client, product["id"], admin, original, "IMG_0001.JPG", "image/jpeg")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["url"] == f"/media/products/{product['id']}/{body['id']}.jpg"
    assert (body["width"], body["height"]) == (48, 32)
    with Image.open(stored(media, body["url"])) as saved:
        assert (saved.format, saved.size, getattr(saved, "n_frames", 1)) == ("JPEG", (48, 32), 1)
        red, _green, blue = saved.convert("RGB").getpixel((24, 16))
        assert red > 150 and blue < 80  # the first picture (red), not the second (blue)
    assert (await client.get(body["url"])).headers["content-type"] == "image/jpeg"
    assert [i["id"] for i in (await client.get(f"{P}/{product['id']}")).json()["images"]] == [body["id"]]


async def test_data_urls_of_each_format_keep_their_format_and_show_on_the_product(
    client: httpx.AsyncClient, admin: dict[str, str], media: Path
) -> None:
    product = await new_product(client, admin)
    await client.get(f"{P}/{product['id']}")  # warm the public cache: the upload must make it stale
    cases = [
        (png_with_text(), "image/jpeg", "PNG", "png", (1000, 500), (320, 160)),
        (animated_gif(), "image/gif", "GIF", "gif", (30, 30), (30, 30)),
        (webp(), "application/octet-stream", "WEBP", "webp", (64, 48), (64, 48)),
    ]
    created = []
    for data, declared, fmt, extension, size, thumb_size in cases:
        response = await client.post(
            f"{P}/{product['id']}/images",
            json={"data_url": data_url(data, declared), "alt": f"{fmt} view"},
            headers=admin,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["url"].endswith(f".{extension}")
        assert (body["width"], body["height"]) == size
        raw = stored(media, body["url"]).read_bytes()
        assert b"Jane Secret" not in raw
        with Image.open(io.BytesIO(raw)) as saved:
            assert (saved.format, saved.size) == (fmt, size)
            assert getattr(saved, "n_frames", 1) == 1  # an animated GIF keeps its first frame
            assert "exif" not in saved.info and "comment" not in saved.info and "Author" not in saved.info
            if fmt == "PNG":
                assert saved.mode == "RGBA" and saved.getpixel((0, 0)) == (10, 120, 200, 128)
        with Image.open(stored(media, body["thumbnail_url"])) as thumb:
            assert (thumb.format, thumb.size) == ("WEBP", thumb_size)
        created.append(body)
    assert [b["position"] for b in created] == [0, 1, 2]

    shown = (await client.get(f"{P}/{product['id']}")).json()["images"]
    assert shown == [
        {key: b[key] for key in ("id", "url", "thumbnail_url", "alt", "position", "width", "height")} for b in created
    ]
    for image in shown:
        assert (await client.get(image["url"])).status_code == 200


async def test_delete_removes_the_row_and_both_files(
    client: httpx.AsyncClient, admin: dict[str, str], media: Path, services: Services
) -> None:
    product = await new_product(client, admin)
    kept = (await upload(client, product["id"], admin, jpeg_with_exif())).json()
    gone = (await upload(client, product["id"], admin, png_with_text())).json()
    assert stored(media, gone["url"]).exists() and stored(media, gone["thumbnail_url"]).exists()

    response = await client.delete(f"{P}/{product['id']}/images/{gone['id']}", headers=admin)
    assert response.status_code == 204
    assert not stored(media, gone["url"]).exists()
    assert not stored(media, gone["thumbnail_url"]).exists()
    assert stored(media, kept["url"]).exists() and stored(media, kept["thumbnail_url"]).exists()
    assert await image_rows(services) == 1
    assert [i["id"] for i in (await client.get(f"{P}/{product['id']}")).json()["images"]] == [kept["id"]]
    assert (await client.get(gone["url"])).status_code == 404

    again = await client.delete(f"{P}/{product['id']}/images/{gone['id']}", headers=admin)
    assert again.status_code == 404 and again.json()["type"].endswith("/not-found")


async def test_vendors_manage_images_of_their_own_products_only(
    client: httpx.AsyncClient, services: Services, media: Path
) -> None:
    owner = await make_vendor(services, client)
    other = await make_vendor(services, client)
    product = await new_product(client, owner)
    mine = await upload(client, product["id"], owner, jpeg_with_exif())
    assert mine.status_code == 201
    before = snapshot(media)
    theirs = await upload(client, product["id"], other, jpeg_with_exif())
    assert theirs.status_code == 404
    delete = await client.delete(f"{P}/{product['id']}/images/{mine.json()['id']}", headers=other)
    assert delete.status_code == 404
    assert snapshot(media) == before and await image_rows(services) == 1


# --- refusals change nothing --------------------------------------------------------------------------------


async def _refused(
    client: httpx.AsyncClient,
    services: Services,
    media: Path,
    product_id: str,
    send: Any,
    status: int,
    slug: str,
) -> dict[str, Any]:
    before = snapshot(media)
    response = await send()
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://mercato.dev/problems/{slug}"
    assert snapshot(media) == before  # no file written, none removed
    assert await image_rows(services) == 1  # only the image uploaded beforehand
    images_shown = (await client.get(f"{P}/{product_id}")).json()["images"]
    assert len(images_shown) == 1
    return body


@pytest.fixture
async def product_with_image(client: httpx.AsyncClient, admin: dict[str, str], media: Path) -> str:
    product = await new_product(client, admin)
    assert (await upload(client, product["id"], admin, jpeg_with_exif())).status_code == 201
    return str(product["id"])


async def test_a_renamed_text_file_is_415(
    client: httpx.AsyncClient, admin: dict[str, str], media: Path, services: Services, product_with_image: str
) -> None:
    text = b"name,price\nlamp,10.00\n" * 50
    body = await _refused(
        client,
        services,
        media,
        product_with_image,
        lambda: upload(client, product_with_image, admin, text, "lamp.jpg", "image/jpeg"),
        415,
        "unsupported-media-type",
    )
    assert "JPEG, PNG, GIF or WebP" in body["detail"]
    await _refused(
        client,
        services,
        media,
        product_with_image,
        lambda: client.post(
            f"{P}/{product_with_image}/images", json={"data_url": data_url(text, "image/png")}, headers=admin
        ),
        415,
        "unsupported-media-type",
    )


async def test_a_truncated_image_is_415(
    client: httpx.AsyncClient, admin: dict[str, str], media: Path, services: Services, product_with_image: str
) -> None:
    half = png_with_text()[:400]
    await _refused(
        client,
        services,
        media,
        product_with_image,
        lambda: upload(client, product_with_image, admin, half, "cut.png", "image/png"),
        415,
        "unsupported-media-type",
    )


async def test_a_6_mb_image_is_413(
    client: httpx.AsyncClient, admin: dict[str, str], media: Path, services: Services, product_with_image: str
) -> None:
    big = noise_png(6 * 1024 * 1024)
    body = await _refused(
        client,
        services,
        media,
        product_with_image,
        lambda: upload(client, product_with_image, admin, big, "big.png", "image/png"),
        413,
        "payload-too-large",
    )
    assert body["detail"] == "The image is larger than 5242880 bytes."
    # as a data URL 6 MB is past the 8 MB JSON limit (base64 adds a third); 5.5 MB fits in the body but not
    # in the image limit, which is checked on the data URL's length before decoding
    for size in (6 * 1024 * 1024, 5 * 1024 * 1024 + 512 * 1024):
        url = data_url(noise_png(size))
        body = await _refused(
            client,
            services,
            media,
            product_with_image,
            lambda url=url: client.post(f"{P}/{product_with_image}/images", json={"data_url": url}, headers=admin),
            413,
            "payload-too-large",
        )
    assert body["detail"] == "The image is larger than 5242880 bytes."


async def test_an_oversized_stream_is_refused_before_it_is_all_read(
    client: httpx.AsyncClient, admin: dict[str, str], media: Path, services: Services, product_with_image: str
) -> None:
    boundary = "mercato-boundary"
    chunk = 64 * 1024
    total = 7 * 1024 * 1024
    sent = 0

    async def body() -> AsyncIterator[bytes]:  # no Content-Length: the cap is enforced while reading
        nonlocal sent
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        yield head
        while sent < total:
            sent += chunk
            yield b"\0" * chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {**admin, "content-type": f"multipart/form-data; boundary={boundary}"}
    await _refused(
        client,
        services,
        media,
        product_with_image,
        lambda: client.post(f"{P}/{product_with_image}/images", content=body(), headers=headers),
        413,
        "payload-too-large",
    )
    assert sent <= images.MAX_IMAGE_BYTES + 128 * 1024  # stopped right after the limit, not at 7 MiB


async def test_a_100_megapixel_png_is_413_before_decoding(
    client: httpx.AsyncClient, admin: dict[str, str], media: Path, services: Services, product_with_image: str
) -> None:
    bomb = png_bomb()
    assert len(bomb) < 100_000
    body = await _refused(
        client,
        services,
        media,
        product_with_image,
        lambda: upload(client, product_with_image, admin, bomb, "bomb.png", "image/png"),
        413,
        "payload-too-large",
    )
    assert "megapixels" in body["detail"]
    await _refused(
        client,
        services,
        media,
        product_with_image,
        lambda: client.post(f"{P}/{product_with_image}/images", json={"data_url": data_url(bomb)}, headers=admin),
        413,
        "payload-too-large",
    )


def test_the_pixel_limit_is_checked_on_the_header() -> None:
    # 40 megapixels pass the header check; one row more does not
    with pytest.raises(PayloadTooLarge):
        images.process_image(png_bomb(8_000, 5_001))
    with pytest.raises(UnsupportedMediaType):  # header accepted, pixels then fail to decode
        images.process_image(png_bomb(8_000, 5_000)[:-40])


async def test_a_customer_cannot_upload(
    client: httpx.AsyncClient, media: Path, services: Services, product_with_image: str
) -> None:
    customer = bearer(await register(client))
    await _refused(
        client,
        services,
        media,
        product_with_image,
        lambda: upload(client, product_with_image, customer, jpeg_with_exif()),
        403,
        "forbidden",
    )
    await _refused(
        client,
        services,
        media,
        product_with_image,
        lambda: client.post(
            f"{P}/{product_with_image}/images",
            json={"data_url": data_url(jpeg_with_exif())},
            headers=customer,
        ),
        403,
        "forbidden",
    )


@pytest.mark.parametrize(
    ("kind", "status", "slug"),
    [
        ("text/plain", 415, "unsupported-media-type"),
        ("no-file-field", 422, "validation-error"),
        ("unknown-field", 422, "validation-error"),
        ("not-a-data-url", 422, "validation-error"),
        ("bad-base64", 422, "validation-error"),
        ("extra-json-field", 422, "validation-error"),
        ("nul-in-alt", 422, "validation-error"),
        ("nul-in-json-alt", 422, "validation-error"),
    ],
)
async def test_malformed_uploads(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    media: Path,
    services: Services,
    product_with_image: str,
    kind: str,
    status: int,
    slug: str,
) -> None:
    path = f"{P}/{product_with_image}/images"
    image = jpeg_with_exif()
    sends = {
        "text/plain": lambda: client.post(path, content=image, headers={**admin, "content-type": "text/plain"}),
        "no-file-field": lambda: client.post(path, files={"picture": ("a.jpg", image, "image/jpeg")}, headers=admin),
        "unknown-field": lambda: upload(client, product_with_image, admin, image, role="admin"),
        "not-a-data-url": lambda: client.post(path, json={"data_url": "https://example.com/a.png"}, headers=admin),
        "bad-base64": lambda: client.post(path, json={"data_url": "data:image/png;base64,@@@@"}, headers=admin),
        "extra-json-field": lambda: client.post(path, json={"data_url": data_url(image), "position": 0}, headers=admin),
        "nul-in-alt": lambda: upload(client, product_with_image, admin, image, alt="Front\x00"),
        "nul-in-json-alt": lambda: client.post(path, json={"data_url": data_url(image), "alt": "F\x00"}, headers=admin),
    }
    await _refused(client, services, media, product_with_image, sends[kind], status, slug)


def _sqlite_writer_lock(database_url: str) -> str:
    """``"free"`` when a new SQLite connection can start a write transaction at once, else ``"locked"``."""
    conn = sqlite3.connect(database_url.split("///", 1)[1], timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
        return "free"
    except sqlite3.OperationalError:
        return "locked"
    finally:
        conn.close()


async def test_decoding_runs_in_a_thread_before_the_write_transaction(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    media: Path,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sqlite = services.settings.is_sqlite  # the single-writer lock is SQLite's; the thread check applies to both
    url = services.settings.database_url
    if sqlite:
        async with services.db.session(write=True) as session:  # control: a write transaction is seen
            await session.execute(select(1))
            assert await anyio.to_thread.run_sync(_sqlite_writer_lock, url) == "locked"
    product = await new_product(client, admin)
    seen: list[tuple[str, bool]] = []
    real = images.process_image

    def spy(data: bytes) -> images.PreparedImage:
        lock = _sqlite_writer_lock(url) if sqlite else "free"
        seen.append((lock, threading.current_thread() is threading.main_thread()))
        return real(data)

    monkeypatch.setattr(images, "process_image", spy)
    response = await upload(client, product["id"], admin, jpeg_with_exif())
    assert response.status_code == 201
    assert seen == [("free", False)]  # no writer lock held, and not on the event loop's thread


# --- files follow the transaction ---------------------------------------------------------------------------


class Boom(Exception):
    """Stands for any error that makes the request's transaction roll back."""


async def test_a_rolled_back_upload_leaves_no_file(
    client: httpx.AsyncClient, admin: dict[str, str], media: Path, services: Services
) -> None:
    product = await new_product(client, admin)
    prepared = await images.prepare(jpeg_with_exif())
    written: list[bool] = []

    async def request() -> None:
        async with services.db.session(write=True) as session:
            row = await images.add_image(session, Principal(role=Role.admin), product["id"], prepared, alt=None)
            written.append(row.storage_key is not None and (media / row.storage_key).exists())
            raise Boom("the request failed after the files were written")

    with pytest.raises(Boom):
        await request()
    assert written == [True]
    assert snapshot(media) == {} and await image_rows(services) == 0


async def test_a_failed_commit_leaves_no_file(
    client: httpx.AsyncClient, admin: dict[str, str], media: Path, services: Services
) -> None:
    product = await new_product(client, admin)
    prepared = await images.prepare(png_with_text())
    written: list[int] = []

    async def request() -> None:
        async with services.db.session(write=True) as session:
            await images.add_image(session, Principal(role=Role.admin), product["id"], prepared, alt=None)
            written.append(len(snapshot(media)))
            # a row that breaks a foreign key: the flush inside COMMIT fails
            session.add(ProductImage(id=uuid.uuid4(), product_id=uuid.uuid4(), url="x", position=0))

    with pytest.raises(IntegrityError):
        await request()
    assert written == [2]
    assert snapshot(media) == {} and await image_rows(services) == 0


async def test_a_rolled_back_delete_keeps_the_files(
    client: httpx.AsyncClient, admin: dict[str, str], media: Path, services: Services
) -> None:
    product = await new_product(client, admin)
    image = (await upload(client, product["id"], admin, webp())).json()
    before = snapshot(media)

    async def request() -> None:
        async with services.db.session(write=True) as session:
            await images.delete_image(session, Principal(role=Role.admin), product["id"], uuid.UUID(image["id"]))
            raise Boom("the request failed after the row was deleted")

    with pytest.raises(Boom):
        await request()
    assert snapshot(media) == before and await image_rows(services) == 1
