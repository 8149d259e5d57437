"""Request shapes of the catalog API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

SkuCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9._/-]{1,64}$")]
CategoryCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Minor = Annotated[int, Field(ge=0, le=10**12)]
Mm = Annotated[int, Field(ge=0, le=100_000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=500)


class ComponentIn(Strict):
    sku: SkuCode
    quantity: Annotated[int, Field(ge=1, le=10_000)]


class SkuFields(Strict):
    name_en: Annotated[str, Field(max_length=200)] | None = None
    spec: dict[str, Annotated[str, Field(max_length=100)]] | None = None
    spec_text: Annotated[str, Field(max_length=200)] | None = None
    barcode: Annotated[str, Field(pattern=r"^[0-9]{8,14}$")] | None = None
    unit: Annotated[str, Field(min_length=1, max_length=16)] | None = None
    weight_g: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    length_mm: Mm | None = None
    width_mm: Mm | None = None
    height_mm: Mm | None = None
    category: CategoryCode | None = None
    brand: Annotated[str, Field(max_length=100)] | None = None
    brand_en: Annotated[str, Field(max_length=100)] | None = None
    cost_minor: Minor | None = None
    min_price_minor: Minor | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    image_ref: Annotated[str, Field(max_length=500)] | None = None
    components: Annotated[list[ComponentIn], Field(min_length=1, max_length=50)] | None = None


class SkuIn(SkuFields):
    code: SkuCode
    name: Name
    active: bool = True


class SkuPatch(SkuFields):
    name: Name | None = None
    active: bool | None = None


class CategoryIn(Strict):
    code: CategoryCode
    name: Name
    name_en: Annotated[str, Field(max_length=200)] = ""
    parent: CategoryCode | None = None


class CategoryPatch(Strict):
    name: Name | None = None
    name_en: Annotated[str, Field(max_length=200)] | None = None
    parent: CategoryCode | None = None


def sku_fields(
    body: SkuFields, *, exclude_unset: bool
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """(column values, components or None) of a request body."""
    values = body.model_dump(exclude_unset=exclude_unset, exclude={"components"})
    if not exclude_unset:
        values = {k: v for k, v in values.items() if v is not None or k in ("code",)}
    if values.get("spec") is not None and not values.get("spec_text"):
        values["spec_text"] = " / ".join(str(v) for v in values["spec"].values())[:200]
    components = [c.model_dump() for c in body.components] if body.components is not None else None
    return values, components
