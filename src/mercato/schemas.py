"""Base classes of every request and response model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestModel(BaseModel):
    """A request body: unknown fields are refused (422), so clients cannot mass-assign ``role``, ``status``..."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ResponseModel(BaseModel):
    """A response body, readable from ORM objects."""

    model_config = ConfigDict(from_attributes=True)
