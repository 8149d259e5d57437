"""Request and response shapes of the payments API; unknown fields are refused."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ordertally.core.inputs import Amount, FilledLine, FilledText, PastInstant
from ordertally.core.inputs import Text as FreeText

Text = FilledLine
Provider = Literal["wechatpay", "alipay"]
# A filter over manual payment requests: one state of `state_machine.ManualState`, or all.
ManualStateFilter = Literal["pending_approval", "approved", "rejected", "superseded", "all"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=500)


class PaymentCreate(Strict):
    provider: Provider


class ManualPaymentIn(Strict):
    reference: Annotated[Text, Field(max_length=128)]
    amount: Amount
    paid_at: PastInstant
    reason: Annotated[FilledText, Field(min_length=3, max_length=500)]


class DecisionIn(Strict):
    note: Annotated[FreeText, Field(max_length=500)] = ""


class PaymentOut(BaseModel):
    out_trade_no: str
    order_no: str
    provider: str
    state: str
    amount: str
    currency: str
    paid_amount: str | None
    refunded: str
    provider_txn_id: str | None
    paid_at: datetime | None
    settles_order: bool
    provider_params: dict[str, Any] | None
    next_query_at: datetime | None
    query_count: int
    last_query_state: str | None
    created_at: datetime


class NotificationOut(BaseModel):
    id: int
    provider: str
    source: str
    event_type: str
    out_trade_no: str | None
    trade_state: str | None
    verification: str
    outcome: str
    received_at: datetime
    applied_at: datetime | None


class RefundOut(BaseModel):
    out_trade_no: str
    out_refund_no: str
    refund_id: str | None
    amount: str
    status: str
    refunded_at: datetime | None


class OrderPaymentsOut(BaseModel):
    order_no: str
    status: str
    payments: list[PaymentOut]
    notifications: list[NotificationOut]
    refunds: list[RefundOut]


class ManualPaymentOut(BaseModel):
    id: int
    order_no: str
    amount: str
    currency: str
    reference: str
    paid_at: datetime
    reason: str
    state: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    query_outcome: str | None


class ReconciliationOut(BaseModel):
    id: int | None
    provider: str
    rows: int
    counts: dict[str, int]
    discrepancies: list[dict[str, Any]]
    truncated: bool
