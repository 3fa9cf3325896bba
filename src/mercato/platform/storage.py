"""Where uploaded media (product images) are kept: a small :class:`Storage` interface and its default
backend, :class:`LocalStorage`, a directory under the data directory (``<MERCATO_DATA_DIR>/media``) served at
``/media``.

Keys are relative POSIX paths made by the application (``products/<product id>/<image id>.jpg``); a backend
turns a key into the public URL it returns from :meth:`Storage.save`.

Files and database rows are kept in step with the request's transaction:

- :func:`discard_unless_committed` — files written during a transaction are deleted again when that
  transaction ends without committing (an error in the request, a failed ``COMMIT``), so a refused or failed
  upload leaves no orphan file;
- :func:`delete_after_commit` — files of deleted rows are removed only once the deletion has committed, so a
  rolled-back deletion never leaves a row pointing at a missing file.

The methods of a backend block (file or network I/O): call them from async code through
``anyio.to_thread.run_sync``.

:class:`S3Storage` keeps the files in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2 ...) when
``MERCATO_STORAGE_URL=s3://bucket[/prefix]``; it needs the ``s3`` extra (``pip install 'mercato[s3]'``, boto3),
imported only then. Nothing is served at ``/media`` in that case: URLs point at ``MERCATO_S3_PUBLIC_URL``
(a CDN, or a bucket that allows public reads). Credentials come from boto3's standard chain (``AWS_*``
variables, ``~/.aws``, instance or task roles), never from Mercato's settings.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from mercato.config import Settings
from mercato.db.engine import after_commit

log = structlog.get_logger("mercato.storage")

#: Keys are made by the application, never taken from a client; this refuses anything else anyway.
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9][A-Za-z0-9_.\-]*)*$")


class Storage(Protocol):
    """A place to put media files. Both methods block (run them in a worker thread)."""

    def save(self, key: str, data: bytes, content_type: str) -> str:
        """Store ``data`` under ``key`` (replacing any previous content, atomically); return its public URL.

        ``content_type`` is the MIME type the file is to be served with (``image/jpeg`` ...).
        """
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a key that does not exist is not an error."""
        ...


class LocalStorage:
    """Files in a local directory, served by the app at ``base_url`` (see ``mercato.catalog.images_router``).

    Args:
        root: the directory (created on first save), by default ``<data dir>/media``.
        base_url: URL path the directory is served at, without a trailing slash.
    """

    def __init__(self, root: Path, base_url: str = "/media") -> None:
        self.root = root
        self.base_url = base_url.rstrip("/")

    def path(self, key: str) -> Path:
        """The file of ``key`` under :attr:`root`.

        Raises:
            ValueError: ``key`` is not a plain relative path (absolute, ``..``, hidden parts, odd characters).
        """
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key

    def url(self, key: str) -> str:
        """The public URL of ``key`` (a path such as ``/media/products/<id>/<id>.jpg``)."""
        self.path(key)
        return f"{self.base_url}/{key}"

    def save(self, key: str, data: bytes, content_type: str) -> str:
        """Write ``data`` to a temporary file beside the target, flush it to disk and rename it into place, so
        readers (and a crash) never see a partial file. ``content_type`` is implied by the key's extension
        when served. Returns the URL (:meth:`url`)."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_directory(target.parent)
        return self.url(key)

    def delete(self, key: str) -> None:
        """Remove the file of ``key`` if it exists (its directory is left in place)."""
        self.path(key).unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class StorageUnavailable(RuntimeError):
    """The configured storage cannot be used in this installation (``s3://`` without boto3 installed)."""


#: Cache-Control of stored objects: a key is never reused for other content (every upload gets a new id).
IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"


class S3Storage:
    """Objects in an S3-compatible bucket, under an optional key prefix.

    A key ``products/<p>/<i>.jpg`` is stored as the object ``<prefix>/products/<p>/<i>.jpg`` with its content
    type and :data:`IMMUTABLE_CACHE_CONTROL`; its URL is ``<public base>/<object key>``. The boto3 client is
    built once per instance (thread-safe; :func:`storage_for` shares instances), with path-style addressing
    when an endpoint is given (MinIO and most S3-compatible servers), bounded timeouts and standard retries.

    Args:
        bucket: bucket name (it must exist; Mercato never creates buckets).
        prefix: key prefix without slashes at either end, ``""`` for none.
        endpoint_url: S3-compatible endpoint (``http://127.0.0.1:9000``); ``None`` for AWS.
        region: region name; ``None`` lets boto3 use its configuration (``AWS_REGION``, ``~/.aws/config``), or
            ``us-east-1``.
        public_url: base URL the objects are served from, without a trailing slash; by default
            ``<endpoint_url>/<bucket>`` or ``https://<bucket>.s3[.<region>].amazonaws.com``.
        client: a ready boto3 S3 client (tests); built from the arguments above when omitted.

    Raises:
        StorageUnavailable: boto3 is not installed (``pip install 'mercato[s3]'``).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        public_url: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if public_url is None:
            if endpoint_url is not None:
                public_url = f"{endpoint_url.rstrip('/')}/{bucket}"
            elif region is not None:
                public_url = f"https://{bucket}.s3.{region}.amazonaws.com"
            else:
                public_url = f"https://{bucket}.s3.amazonaws.com"
        self.public_url = public_url.rstrip("/")
        self.client = client if client is not None else _s3_client(endpoint_url, region)

    def object_key(self, key: str) -> str:
        """The bucket's object key of ``key`` (the prefix, if any, then ``key``).

        Raises:
            ValueError: ``key`` is not a plain relative path (absolute, ``..``, hidden parts, odd characters).
        """
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def url(self, key: str) -> str:
        """The public URL of ``key``: ``<public_url>/<object key>``."""
        return f"{self.public_url}/{self.object_key(key)}"

    def save(self, key: str, data: bytes, content_type: str) -> str:
        """Upload ``data`` in one ``PutObject`` (atomic: readers see the old object or the new one) with
        ``Content-Type: content_type`` and an immutable ``Cache-Control``. Returns the URL (:meth:`url`).

        Raises:
            botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError: the upload failed (no
                credentials, no such bucket, access denied, network) after boto3's retries.
        """
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.object_key(key),
            Body=data,
            ContentType=content_type,
            CacheControl=IMMUTABLE_CACHE_CONTROL,
        )
        return self.url(key)

    def delete(self, key: str) -> None:
        """Delete the object of ``key``; S3 answers a missing key with success, so this is idempotent.

        Raises:
            botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError: the request failed.
        """
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))


def _s3_client(endpoint_url: str | None, region: str | None) -> Any:
    """A boto3 S3 client with its own session (boto3's default session is not thread-safe to build clients
    from), credentials from boto3's standard chain.

    Raises:
        StorageUnavailable: boto3 is not installed.
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise StorageUnavailable(
            "MERCATO_STORAGE_URL is an s3:// URL, which needs boto3: install mercato[s3] "
            "(pip install 'mercato[s3]'), or unset MERCATO_STORAGE_URL to keep media in the data directory"
        ) from exc
    config = Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


@functools.lru_cache(maxsize=8)
def _shared_s3_storage(
    bucket: str, prefix: str, endpoint_url: str | None, region: str | None, public_url: str | None
) -> S3Storage:
    """One :class:`S3Storage` (and so one client and connection pool) per configuration, for the process."""
    return S3Storage(bucket, prefix, endpoint_url=endpoint_url, region=region, public_url=public_url)


def storage_for(settings: Settings) -> Storage:
    """The configured media storage.

    Args:
        settings: the application settings (``MERCATO_STORAGE_URL``, ``MERCATO_S3_*``, ``MERCATO_DATA_DIR``).

    Returns:
        :class:`S3Storage` when ``MERCATO_STORAGE_URL`` is ``s3://bucket[/prefix]`` (built once per
        configuration and shared); otherwise :class:`LocalStorage` at ``<data dir>/media`` served at
        ``/media`` (cheap to build, holds no connection).

    Raises:
        StorageUnavailable: S3 is configured but boto3 is not installed (``pip install 'mercato[s3]'``).
    """
    s3 = settings.storage_s3
    if s3 is not None:
        bucket, prefix = s3
        return _shared_s3_storage(bucket, prefix, settings.s3_endpoint_url, settings.s3_region, settings.s3_public_url)
    return LocalStorage(settings.data_dir / "media", base_url="/media")


def delete_quietly(storage: Storage, keys: Sequence[str]) -> None:
    """Delete every key, logging (never raising) failures: a leftover file is harmless, while an error here
    would come after the database change is already committed. Blocking."""
    for key in keys:
        try:
            storage.delete(key)
        except Exception:
            log.exception("media_delete_failed", key=key)


def discard_unless_committed(session: AsyncSession, storage: Storage, keys: Sequence[str]) -> None:
    """Delete ``keys`` from ``storage`` if the session's current transaction ends without committing.

    Call it right after saving files that a row added in the same transaction refers to. It listens to the
    session's ``after_commit`` and ``after_transaction_end`` events (SQLAlchemy), so it covers an error raised
    by the request as well as a failing ``COMMIT``. The deletion runs inside that event, on the event loop's
    thread: fine for :class:`LocalStorage` (an ``unlink``); for :class:`S3Storage` it is a blocking
    ``DeleteObject`` per key, accepted on this failure-only path so that the objects are gone when the request
    ends.
    """
    pending = list(keys)
    state = {"committed": False, "done": False}
    sync_session = session.sync_session

    def on_commit(_session: Session) -> None:
        state["committed"] = True

    def on_end(_session: Session, transaction: SessionTransaction) -> None:
        if state["done"] or transaction.parent is not None:
            return  # already handled, or a savepoint / inner transaction
        state["done"] = True
        if not state["committed"]:
            delete_quietly(storage, pending)

    event.listen(sync_session, "after_commit", on_commit)
    event.listen(sync_session, "after_transaction_end", on_end)


def delete_after_commit(session: AsyncSession, storage: Storage, keys: Sequence[str]) -> None:
    """Delete ``keys`` from ``storage`` (in a worker thread) once the session's transaction has committed;
    nothing happens on rollback."""
    pending = list(keys)

    async def delete() -> None:
        await anyio.to_thread.run_sync(delete_quietly, storage, pending)

    after_commit(session, delete)
