"""Pydantic input of the exports API."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ExportIn(BaseModel):
    """A request for an export."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    format: Literal["csv", "xlsx"] = "csv"
    columns: list[str] | None = Field(default=None, max_length=100)
    date_from: date | None = None
    date_to: date | None = None
    filters: dict[str, str] = Field(default_factory=dict, max_length=10)
    timezone: str | None = Field(default=None, max_length=64)
    unmask_pii: bool = False
    pii_reason: str | None = Field(default=None, max_length=200)


class TemplateIn(BaseModel):
    """A saved custom template: a built-in template's rows with a chosen list of columns."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    base: str = Field(min_length=1, max_length=64)
    columns: list[str] = Field(min_length=1, max_length=100)
