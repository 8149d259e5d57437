"""Request and response shapes of the orders API; unknown fields are refused, text carries no
control characters, quantities are strict integers and amounts are bounded (core/inputs.py)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ordertally.core.inputs import (
    MAX_LINES,
    Amount,
    FilledLine,
    FilledText,
    Line,
    Quantity,
    check_amount,
)
from ordertally.core.inputs import Text as FreeText

Text = FilledLine


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=500)


class CustomerIn(Strict):
    name: Annotated[Text, Field(max_length=100)]
    phone: Annotated[Text, Field(max_length=32)]


class AddressIn(Strict):
    name: Annotated[Text, Field(max_length=100)]
    phone: Annotated[Text, Field(max_length=32)]
    province: Annotated[Text, Field(max_length=32)]
    city: Annotated[Text, Field(max_length=64)]
    district: Annotated[Line, Field(max_length=64)] = ""
    line1: Annotated[Text, Field(max_length=200)]
    postal_code: Annotated[str, Field(max_length=16, pattern=r"^[0-9A-Za-z -]*$")] = ""


class LineIn(Strict):
    sku: Annotated[str, Field(pattern=r"^[A-Za-z0-9._/-]{1,64}$")]
    quantity: Quantity
    unit_price: Amount


class OrderCreate(Strict):
    channel: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}$")]
    external_id: Annotated[Line | None, Field(min_length=1, max_length=128)] = None
    customer: CustomerIn
    shipping_address: AddressIn
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=MAX_LINES)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    discount: Amount = "0"
    shipping: Amount = "0"
    tax: Amount = "0"  # charged on top of the prices

    @model_validator(mode="after")
    def _bounded_total(self) -> OrderCreate:
        """No order adds up to more than MAX_AMOUNT (so no total overflows a 64-bit column)."""
        check_amount(sum((Decimal(ln.unit_price) * ln.quantity for ln in self.lines), Decimal(0)))
        return self


class CancelIn(Strict):
    reason: Annotated[FreeText, Field(max_length=500)] = ""


class ResolveIn(Strict):
    resolution: Annotated[FilledText, Field(max_length=500)]


class LineOut(BaseModel):
    line_no: int
    sku: str
    name: str | None
    name_en: str | None
    spec: str | None
    barcode: str | None
    quantity: int
    unit_price: str
    discount: str
    total: str


class CustomerOut(BaseModel):
    name: str
    phone: str


class AddressOut(BaseModel):
    name: str
    phone: str
    province: str
    city: str
    district: str


class HoldOut(BaseModel):
    id: int
    category: str
    type: str
    blocking: bool
    detail: dict[str, object]
    created_at: datetime


class ReservationOut(BaseModel):
    warehouse: str
    line_no: int | None
    sku: str
    quantity: int
    state: str
    expires_at: datetime | None


class PlannedShipmentLine(BaseModel):
    line_no: int
    sku: str
    quantity: int


class PlannedShipment(BaseModel):
    warehouse: str
    lines: list[PlannedShipmentLine]


class OrderOut(BaseModel):
    order_no: str
    channel: str
    external_id: str | None
    status: str
    version: int
    currency: str
    subtotal: str
    discount: str
    total: str
    base_currency: str
    fx_rate: str
    shipping: str = "0"
    tax: str = "0"
    fee: str = "0"
    base_total: str | None = None
    customer: CustomerOut
    shipping_address: AddressOut
    lines: list[LineOut]
    holds: list[HoldOut]
    reservations: list[ReservationOut]
    shipment_plan: list[PlannedShipment]
    allocation: dict[str, object] | None
    payment_deadline_at: datetime | None
    created_at: datetime
    updated_at: datetime


class OrderSummary(BaseModel):
    order_no: str
    channel: str
    external_id: str | None
    status: str
    currency: str
    total: str
    customer_name: str
    customer_phone: str
    created_at: datetime


class OrderPage(BaseModel):
    items: list[OrderSummary]
    next_cursor: str | None


class OrderEventOut(BaseModel):
    version: int
    event: str
    from_status: str | None
    to_status: str
    actor_kind: str
    actor_id: str
    source_ip: str | None
    evidence_ref: str | None
    note: str | None
    at: datetime


class ContactOut(BaseModel):
    # None for the warehouse role and warehouse-scoped keys (the label's recipient only).
    customer_name: str | None
    customer_phone: str | None
    shipping_address: dict[str, str]


class ReviewHoldIn(Strict):
    """Hold an order waiting in review (挂起), with the reason."""

    reason: Annotated[FilledText, Field(max_length=200)]


class ReviewEditIn(Strict):
    """What a reviewer changes: the shipping address, the seller's remark ("" clears it), the
    warehouse the order ships from. At least one."""

    shipping_address: AddressIn | None = None
    remark: Annotated[FreeText, Field(max_length=500)] | None = None
    warehouse: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")] | None = None

    @model_validator(mode="after")
    def _something(self) -> ReviewEditIn:
        if self.shipping_address is None and self.remark is None and self.warehouse is None:
            raise ValueError("give a shipping_address, a remark or a warehouse")
        return self


class ViewQuery(Strict):
    """What a saved view of the orders screen remembers: the search box and the filters, as
    the screen's own query parameters (dates as the merchant's days or ISO moments)."""

    q: Annotated[Line, Field(max_length=200)] = ""
    status: Annotated[str, Field(max_length=32, pattern=r"^[a-z_]*$")] = ""
    channel: Annotated[str, Field(max_length=32, pattern=r"^[A-Za-z0-9_-]*$")] = ""
    created_from: Annotated[str, Field(max_length=40, pattern=r"^[0-9T:.+ -]*$")] = ""
    created_to: Annotated[str, Field(max_length=40, pattern=r"^[0-9T:.+ -]*$")] = ""
    case_type: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")] = ""


class SavedViewIn(Strict):
    name: Annotated[Text, Field(max_length=64)]
    shared: bool = False
    query: ViewQuery
