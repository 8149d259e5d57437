"""Request and response shapes of the inventory API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ordertally.core.inputs import MAX_LINES, Line, Quantity, Text

Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
SkuCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9._/-]{1,64}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=500)


class WarehouseIn(Strict):
    code: Code
    name: Annotated[Line, Field(min_length=1, max_length=100)]
    province: Annotated[Line, Field(min_length=1, max_length=32)]
    city: Annotated[Line, Field(min_length=1, max_length=64)]
    latitude: Annotated[float | None, Field(ge=-90, le=90)] = None
    longitude: Annotated[float | None, Field(ge=-180, le=180)] = None
    priority: Annotated[int, Field(strict=True, ge=0, le=10_000)] = 100
    cost_factor: Annotated[float, Field(gt=0, le=100)] = 1.0
    active: bool = True


class WarehousePatch(Strict):
    name: Annotated[Line | None, Field(min_length=1, max_length=100)] = None
    province: Annotated[Line | None, Field(min_length=1, max_length=32)] = None
    city: Annotated[Line | None, Field(min_length=1, max_length=64)] = None
    latitude: Annotated[float | None, Field(ge=-90, le=90)] = None
    longitude: Annotated[float | None, Field(ge=-180, le=180)] = None
    priority: Annotated[int | None, Field(strict=True, ge=0, le=10_000)] = None
    cost_factor: Annotated[float | None, Field(gt=0, le=100)] = None
    active: bool | None = None


class WarehouseOut(BaseModel):
    code: str
    name: str
    province: str
    city: str
    latitude: float | None
    longitude: float | None
    priority: int
    cost_factor: float
    active: bool


class MovementIn(Strict):
    warehouse: Code
    sku: SkuCode
    kind: Literal["receipt", "adjustment", "count"]
    quantity: Annotated[int, Field(strict=True, ge=-10_000_000, le=10_000_000)]
    reason: Annotated[Text, Field(min_length=1, max_length=500)]


class StockSettingsIn(Strict):
    warehouse: Code
    safety_stock: Annotated[int | None, Field(strict=True, ge=0, le=10_000_000)] = None
    buckets: Annotated[int | None, Field(strict=True, ge=1, le=64)] = None


class SimulateLine(Strict):
    sku: SkuCode
    quantity: Quantity


class SimulateIn(Strict):
    shipping_province: Annotated[Line, Field(min_length=1, max_length=32)]
    lines: Annotated[list[SimulateLine], Field(min_length=1, max_length=MAX_LINES)]
