"""Base classes of every request and response model, and the field types that requests share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, field_validator


def utc_representable(value: datetime) -> datetime:
    """Check that an aware datetime has a UTC instant between years 1 and 9999, the range of Python's
    ``datetime`` (every time is stored as UTC, ``db/base.py``): ``9999-12-31T23:59:59-05:00`` is after it.

    Args:
        value: an aware datetime, any offset.

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: its UTC conversion overflows (a 422 naming the field or parameter).
    """
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant in UTC must lie between years 0001 and 9999") from None
    return value


#: A request time: RFC 3339 with a timezone (naive times are 422), whose UTC instant ``datetime`` can hold.
#: Every request body field and query parameter that takes a time uses it.
Instant = Annotated[AwareDatetime, AfterValidator(utc_representable)]


def has_nul(value: object) -> bool:
    """Whether ``value`` (a string, or a list, tuple, set or dict of them, at any depth, dict keys included)
    contains the NUL character ``\\x00``, which PostgreSQL refuses in text and JSON."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(key) or has_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(has_nul(item) for item in value)
    return False


class RequestModel(BaseModel):
    """A request body: unknown fields are refused (422), so clients cannot mass-assign ``role``, ``status``...,
    and no string in it may contain NUL (``\\x00``; 422 naming the field, where PostgreSQL would fail with a 500).
    Query and path parameters get the same rule from :func:`mercato.web.params.refuse_nul`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """Refuse a field whose string (or nested string) holds NUL. A nested request model checks its own
        fields first, so the error names the innermost field.

        Raises:
            ValueError: the value contains ``\\x00`` (a 422 naming the field).
        """
        if has_nul(value):
            raise ValueError("must not contain the NUL character (\\u0000)")
        return value


class ResponseModel(BaseModel):
    """A response body, readable from ORM objects."""

    model_config = ConfigDict(from_attributes=True)
