"""Base classes of every request and response model, and the field types that requests share."""

from __future__ import annotations

import math
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


def has_non_finite(value: object) -> bool:
    """Whether ``value`` (a float, or a list, tuple, set or dict holding one at any depth) is or holds NaN or an
    infinity: Python's JSON parser accepts them, but they are no JSON numbers (RFC 8259 §6), so PostgreSQL's
    ``json`` and SQLite's JSON functions refuse them."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(has_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(has_non_finite(item) for item in value)
    return False


class RequestModel(BaseModel):
    """A request body: unknown fields are refused (422), so clients cannot mass-assign ``role``, ``status``...;
    no string in it may contain NUL (``\\x00``) and no number may be NaN or infinite (422 naming the field, where
    the database would fail with a 500 when storing or reading it). Query and path parameters get the NUL rule from
    :func:`mercato.web.params.refuse_nul`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        """Refuse a field whose string (or nested string) holds NUL, or whose number (or nested number) is NaN or
        infinite. A nested request model checks its own fields first, so the error names the innermost field.

        Raises:
            ValueError: the value holds ``\\x00``, NaN or an infinity (a 422 naming the field).
        """
        if has_nul(value):
            raise ValueError("must not contain the NUL character (\\u0000)")
        if has_non_finite(value):
            raise ValueError("must not hold NaN or Infinity, which are not JSON numbers (RFC 8259)")
        return value


class ResponseModel(BaseModel):
    """A response body, readable from ORM objects."""

    model_config = ConfigDict(from_attributes=True)
