"""Base classes of every request and response model, and the field types that requests share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict


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


class RequestModel(BaseModel):
    """A request body: unknown fields are refused (422), so clients cannot mass-assign ``role``, ``status``..."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ResponseModel(BaseModel):
    """A response body, readable from ORM objects."""

    model_config = ConfigDict(from_attributes=True)
