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
``anyio.to_thread.run_sync``. S3-compatible storage (the ``s3`` extra of ARCHITECTURE.md) plugs in behind the
same interface; it is not implemented yet.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

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


def storage_for(settings: Settings) -> LocalStorage:
    """The configured media storage: today always :class:`LocalStorage` at ``<data dir>/media`` served at
    ``/media`` (cheap to build, holds no connection)."""
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
    thread: fine for :class:`LocalStorage` (an ``unlink``).
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
