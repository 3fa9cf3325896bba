"""Product images kept in S3-compatible object storage (``MERCATO_STORAGE_URL=s3://bucket/prefix``).

The stand-in for S3 is moto's server mode: a real HTTP server on 127.0.0.1 (a free port) speaking the S3 API,
reached by boto3 over the network exactly as in production. Uploads and deletions go through the real API of
an app built from settings that point at it; the test creates the bucket, and AWS credentials are fake values
set in the environment (boto3's standard chain reads them).
"""

from __future__ import annotations

import io
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image
from pydantic import ValidationError

from mercato.app import create_app
from mercato.catalog import images
from mercato.config import Settings
from mercato.identity.models import Role
from mercato.identity.principal import Principal
from mercato.platform.context import Services
from mercato.platform.storage import IMMUTABLE_CACHE_CONTROL, S3Storage, StorageUnavailable, storage_for
from tests.api.test_images import image_rows, jpeg_with_exif, make_vendor, new_product, png_with_text, upload, webp
from tests.conftest import Backend, _empty, bearer, make_admin, register

P = "/api/v1/products"
PREFIX = "shop/media"
CDN = "https://cdn.example.test/assets"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free port of 127.0.0.1, for the module; its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Fake credentials in the environment, and no shared config or profile that could be picked up instead."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Bucket:
    """A bucket made for one test on the moto server, with a client to look inside."""

    name: str
    endpoint: str
    client: Any

    def objects(self) -> dict[str, bytes]:
        """Every object in the bucket, by key, with its content."""
        listing = self.client.list_objects_v2(Bucket=self.name)
        return {
            item["Key"]: self.client.get_object(Bucket=self.name, Key=item["Key"])["Body"].read()
            for item in listing.get("Contents", [])
        }

    def head(self, key: str) -> dict[str, Any]:
        """``HeadObject`` of ``key``."""
        result: dict[str, Any] = self.client.head_object(Bucket=self.name, Key=key)
        return result


@pytest.fixture
def bucket(s3_endpoint: str, aws_credentials: None) -> Bucket:
    """A new, empty bucket (unique name) on the moto server."""
    client = boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    name = f"mercato-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return Bucket(name, s3_endpoint, client)


@dataclass
class S3App:
    """An app (and its services) whose media storage is the test bucket."""

    services: Services
    client: httpx.AsyncClient
    admin: dict[str, str]
    bucket: Bucket


async def s3_app(migrated: Backend, bucket: Bucket, **overrides: Any) -> AsyncIterator[S3App]:
    settings = migrated.settings(
        storage_url=f"s3://{bucket.name}/{PREFIX}/", s3_endpoint_url=bucket.endpoint, **overrides
    )
    services = Services.build(settings, cache_prefix=migrated.prefix + "s3:")
    try:
        await _empty(services)
        app = create_app(settings, services=services)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            admin = bearer(await make_admin(services, http))
            yield S3App(services, http, admin, bucket)
    finally:
        await _empty(services)
        await services.close()


@pytest.fixture
async def cdn_app(migrated: Backend, bucket: Bucket) -> AsyncIterator[S3App]:
    """Files served from a CDN: ``MERCATO_S3_PUBLIC_URL`` set."""
    async for app in s3_app(migrated, bucket, s3_public_url=CDN + "/"):
        yield app


@pytest.fixture
async def direct_app(migrated: Backend, bucket: Bucket) -> AsyncIterator[S3App]:
    """No public URL set: files are served from the endpoint, ``<endpoint>/<bucket>/<key>``."""
    async for app in s3_app(migrated, bucket):
        yield app


def key_of(image: dict[str, Any], product_id: str, extension: str, suffix: str = "") -> str:
    return f"{PREFIX}/products/{product_id}/{image['id']}{suffix}.{extension}"


# --- uploads ------------------------------------------------------------------------------------------------


async def test_an_upload_is_stored_in_the_bucket_with_its_type_and_served_from_the_public_url(
    cdn_app: S3App,
) -> None:
    http, bucket = cdn_app.client, cdn_app.bucket
    product = await new_product(http, cdn_app.admin)

    response = await upload(http, product["id"], cdn_app.admin, png_with_text(), alt="Front")

    assert response.status_code == 201, response.text
    body = response.json()
    image_key = key_of(body, product["id"], "png")
    thumb_key = key_of(body, product["id"], "webp", "-thumb")
    assert body["url"] == f"{CDN}/{image_key}"
    assert body["thumbnail_url"] == f"{CDN}/{thumb_key}"
    objects = bucket.objects()
    assert set(objects) == {image_key, thumb_key}
    with Image.open(io.BytesIO(objects[image_key])) as stored:
        assert stored.format == "PNG" and stored.size == (1000, 500) and "Author" not in stored.info
    with Image.open(io.BytesIO(objects[thumb_key])) as thumb:
        assert thumb.format == "WEBP" and max(thumb.size) == images.THUMBNAIL_SIZE
    image_head, thumb_head = bucket.head(image_key), bucket.head(thumb_key)
    assert image_head["ContentType"] == "image/png"
    assert thumb_head["ContentType"] == "image/webp"
    assert image_head["CacheControl"] == thumb_head["CacheControl"] == IMMUTABLE_CACHE_CONTROL

    shown = (await http.get(f"{P}/{product['id']}")).json()
    assert [(i["url"], i["thumbnail_url"]) for i in shown["images"]] == [(body["url"], body["thumbnail_url"])]
    assert (await http.get(f"/media/products/{product['id']}/{body['id']}.png")).status_code == 404


async def test_without_a_public_url_files_are_served_from_the_endpoint(direct_app: S3App) -> None:
    http, bucket = direct_app.client, direct_app.bucket
    product = await new_product(http, direct_app.admin)

    response = await http.post(
        f"{P}/{product['id']}/images",
        files={"file": ("photo.jpg", jpeg_with_exif(), "image/jpeg")},
        headers=direct_app.admin,
    )

    assert response.status_code == 201, response.text
    body = response.json()
    image_key = key_of(body, product["id"], "jpg")
    assert body["url"] == f"{bucket.endpoint}/{bucket.name}/{image_key}"
    assert bucket.head(image_key)["ContentType"] == "image/jpeg"
    # the URL serves the object to anyone once the bucket allows public reads (docs/deployment.md)
    public_read = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket.name}/{PREFIX}/*",
            }
        ],
    }
    bucket.client.put_bucket_policy(Bucket=bucket.name, Policy=json.dumps(public_read))
    async with httpx.AsyncClient() as anonymous:
        served = await anonymous.get(body["url"])
    assert served.status_code == 200 and served.content == bucket.objects()[image_key]


# --- deletion -----------------------------------------------------------------------------------------------


async def test_deleting_an_image_removes_its_object_and_thumbnail(direct_app: S3App) -> None:
    http, bucket, admin = direct_app.client, direct_app.bucket, direct_app.admin
    product = await new_product(http, admin)
    gone = (await upload(http, product["id"], admin, webp())).json()
    kept = (await upload(http, product["id"], admin, png_with_text((40, 40)))).json()
    assert len(bucket.objects()) == 4

    response = await http.delete(f"{P}/{product['id']}/images/{gone['id']}", headers=admin)

    assert response.status_code == 204
    assert set(bucket.objects()) == {
        key_of(kept, product["id"], "png"),
        key_of(kept, product["id"], "webp", "-thumb"),
    }
    assert await image_rows(direct_app.services) == 1
    # deleting a key that is already gone is not an error
    storage = storage_for(direct_app.services.settings)
    storage.delete(f"products/{product['id']}/{gone['id']}.webp")


# --- refusals leave nothing behind --------------------------------------------------------------------------


async def test_refused_uploads_leave_no_object(direct_app: S3App) -> None:
    http, bucket, admin, services = direct_app.client, direct_app.bucket, direct_app.admin, direct_app.services
    product = await new_product(http, admin)
    customer = bearer(await register(http))
    vendor = await make_vendor(services, http)

    not_an_image = await upload(http, product["id"], admin, b"just text, not a picture", "photo.png", "image/png")
    by_customer = await upload(http, product["id"], customer, png_with_text((20, 20)))
    someone_elses = await upload(http, product["id"], vendor, png_with_text((20, 20)))
    no_product = await upload(http, str(uuid.uuid4()), admin, png_with_text((20, 20)))

    assert not_an_image.status_code == 415
    assert by_customer.status_code == 403
    assert someone_elses.status_code == 404
    assert no_product.status_code == 404
    assert bucket.objects() == {} and await image_rows(services) == 0


class Boom(Exception):
    """Stands for any error that makes the request's transaction roll back."""


async def test_a_rolled_back_upload_removes_the_objects_it_wrote(direct_app: S3App) -> None:
    http, bucket, services = direct_app.client, direct_app.bucket, direct_app.services
    product = await new_product(http, direct_app.admin)
    prepared = await images.prepare(jpeg_with_exif())
    written: list[int] = []

    async def request() -> None:
        async with services.db.session(write=True) as session:
            await images.add_image(session, Principal(role=Role.admin), product["id"], prepared, alt=None)
            written.append(len(bucket.objects()))
            raise Boom("the request failed after the objects were written")

    with pytest.raises(Boom):
        await request()
    assert written == [2]
    assert bucket.objects() == {} and await image_rows(services) == 0


# --- settings and installation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["gs://bucket/media", "file:///var/media", "https://bucket.s3.amazonaws.com", "s3://", "s3://Bad_Bucket"],
)
def test_a_storage_url_that_is_not_s3_names_the_variable(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("MERCATO_STORAGE_URL", url)

    with pytest.raises(ValidationError, match="MERCATO_STORAGE_URL must be s3://bucket"):
        Settings()


def test_s3_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERCATO_STORAGE_URL", "s3://shop-media/prod/images/")
    monkeypatch.setenv("MERCATO_S3_ENDPOINT_URL", "https://minio.internal:9000/")
    monkeypatch.setenv("MERCATO_S3_REGION", "eu-west-1")
    monkeypatch.setenv("MERCATO_S3_PUBLIC_URL", "not a url")

    with pytest.raises(ValidationError, match="MERCATO_S3_PUBLIC_URL must be an http"):
        Settings()
    monkeypatch.setenv("MERCATO_S3_PUBLIC_URL", "")
    settings = Settings()

    assert settings.storage_s3 == ("shop-media", "prod/images")
    assert settings.s3_endpoint_url == "https://minio.internal:9000"
    assert settings.s3_region == "eu-west-1" and settings.s3_public_url is None


def test_default_public_urls(aws_credentials: None) -> None:
    aws = S3Storage("shop-media", "p", region=None)
    regional = S3Storage("shop-media", "", region="eu-west-1")
    minio = S3Storage("shop-media", "p", endpoint_url="http://127.0.0.1:9000/")

    assert aws.url("products/a/b.jpg") == "https://shop-media.s3.amazonaws.com/p/products/a/b.jpg"
    assert regional.url("products/a/b.jpg") == "https://shop-media.s3.eu-west-1.amazonaws.com/products/a/b.jpg"
    assert minio.url("products/a/b.jpg") == "http://127.0.0.1:9000/shop-media/p/products/a/b.jpg"
    with pytest.raises(ValueError, match="invalid storage key"):
        aws.url("../secrets")


async def test_s3_without_boto3_refuses_to_start(migrated: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` now raises ImportError
    settings = migrated.settings(storage_url=f"s3://no-boto3-{uuid.uuid4().hex[:8]}")
    services = Services.build(settings, cache_prefix=migrated.prefix + "noboto:")
    try:
        with pytest.raises(StorageUnavailable, match=r"install mercato\[s3\]"):
            create_app(settings, services=services)
    finally:
        await services.close()
