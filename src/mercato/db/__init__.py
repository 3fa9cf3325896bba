"""Database access: engine and session factory (:mod:`.engine`), declarative base and column types (:mod:`.base`)."""

from mercato.db.base import Base, Money, TimestampMixin, UTCDateTime, uuid_pk
from mercato.db.engine import Database

__all__ = ["Base", "Database", "Money", "TimestampMixin", "UTCDateTime", "uuid_pk"]
