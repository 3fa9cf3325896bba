"""Mercato: an e-commerce backend that runs on SQLite alone or on PostgreSQL and Redis."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mercato")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
