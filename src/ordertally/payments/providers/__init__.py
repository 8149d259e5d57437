"""Provider adapters: what a verified notification or a query answer says, in our terms.

Each adapter (WeChat Pay v3, Alipay) verifies inbound messages, signs outbound requests,
verifies the answers and maps the platform's states onto ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Kind = Literal["payment", "refund", "other"]
# Our reading of a platform's trade state.
TradeStatus = Literal["paid", "pending", "closed", "not_found", "refunded"]


class Rejected(Exception):
    """A message that fails verification; `reason` is the metrics outcome label."""

    def __init__(
        self, reason: str, detail: str, *, status: int = 401, notice: Notice | None = None
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status
        # Set when the signature held but a field disagrees: worth storing for inspection.
        self.notice = notice


@dataclass(slots=True)
class Notice:
    """A verified notification: what the platform says and the raw message it said it in."""

    provider: str
    dedupe_key: str
    event_type: str
    kind: Kind
    out_trade_no: str | None
    provider_txn_id: str | None
    trade_state: str | None
    facts: dict[str, Any]
    headers: dict[str, str]
    body: str
    nonce: str | None = None


@dataclass(slots=True)
class QueryResult:
    """A provider's answer to "what became of this out_trade_no?"."""

    provider: str
    out_trade_no: str
    status: TradeStatus
    trade_state: str
    provider_txn_id: str | None = None
    amount_minor: int | None = None
    currency: str = "CNY"
    paid_at: datetime | None = None
    raw: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def facts(self) -> dict[str, Any]:
        """The same fact shape a notification carries."""
        return {
            "status": self.status,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "paid_at": self.paid_at.isoformat() if self.paid_at else None,
        }


# Our reading of a provider's refund state ("not_found": the provider never received it).
RefundStatus = Literal["succeeded", "processing", "closed", "abnormal", "not_found"]


@dataclass(slots=True)
class RefundResult:
    """What a provider says of one refund (its answer to the refund request or to a query)."""

    provider: str
    out_refund_no: str
    status: RefundStatus
    state: str  # the provider's own word (SUCCESS, PROCESSING, REFUND_SUCCESS, ...)
    refund_id: str | None = None
    amount_minor: int | None = None
    raw: str = ""


class ProviderCallFailed(Exception):
    """A request to a provider failed (network, HTTP status, or an unverifiable answer)."""


class ProviderRefused(ProviderCallFailed):
    """The provider answered the request with its own error code (e.g. Alipay's
    `error_response`: code 40002, sub_code isv.invalid-app-id)."""

    def __init__(self, message: str, *, code: str, sub_code: str = "", sub_msg: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.sub_code = sub_code
        self.sub_msg = sub_msg
