"""Event schemas the catalog domain publishes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ordertally.events.registry import event_schema


@event_schema("CatalogChanged", 1)
class CatalogChanged(BaseModel):
    """What a catalogue write changed that existing orders are found by: SKUs whose words,
    brand or category changed, and categories renamed or moved (their SKUs are affected). One
    write may publish several of these (at most 500 codes each). New words are announced by
    the word revision instead (catalog_revision), which search watches."""

    skus: list[str] = Field(default_factory=list, max_length=500)
    categories: list[str] = Field(default_factory=list, max_length=500)
