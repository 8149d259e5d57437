"""Pydantic input of the after-sales API and of platform records (limits at the edge)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ordertally.aftersales.state_machine import CaseType, GoodsStatus, Responsibility
from ordertally.core.inputs import Amount

Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
Ref = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Waybill = Annotated[str, StringConstraints(strip_whitespace=True, min_length=4, max_length=64)]


class CaseLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_no: int = Field(ge=1, le=10_000)
    quantity: int = Field(ge=1, le=100_000)


class CaseCreate(BaseModel):
    """A 售后单 as customer service (or a platform record) opens it."""

    model_config = ConfigDict(extra="forbid")

    order_no: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    type: CaseType
    reason_code: Code
    lines: list[CaseLineIn] = Field(default_factory=list, max_length=200)
    refund_goods: Amount = "0"
    refund_postage: Amount = "0"
    refund_other: Amount = "0"
    goods_status: GoodsStatus = GoodsStatus.RECEIVED
    evidence: list[Ref] = Field(default_factory=list, max_length=20)
    buyer_message: Annotated[str, StringConstraints(max_length=500)] | None = None
    platform_refund_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class Decision(BaseModel):
    """An approval or rejection, with who is responsible when already known."""

    model_config = ConfigDict(extra="forbid")

    responsibility: Responsibility | None = None
    note: Annotated[str, StringConstraints(max_length=500)] | None = None


class ReturnWaybill(BaseModel):
    model_config = ConfigDict(extra="forbid")

    carrier: Code
    waybill_no: Waybill


class ParcelIn(BaseModel):
    """A parcel that came back to a warehouse, with or without a case."""

    model_config = ConfigDict(extra="forbid")

    warehouse: Code
    carrier: Code | None = None
    waybill_no: Waybill | None = None
    case_no: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = None
    note: Annotated[str, StringConstraints(max_length=500)] | None = None


class InspectLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_no: int = Field(ge=1, le=10_000)
    good: int = Field(ge=0, le=100_000)
    damaged: int = Field(ge=0, le=100_000)
    reason: Annotated[str, StringConstraints(max_length=200)] | None = None


class Inspection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warehouse: Code
    lines: list[InspectLine] = Field(min_length=1, max_length=200)
    responsibility: Responsibility | None = None


class PlatformRefundIn(BaseModel):
    """A refund the platform made (platform orders): recorded, never sent."""

    model_config = ConfigDict(extra="forbid")

    platform_refund_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    amount: Amount
