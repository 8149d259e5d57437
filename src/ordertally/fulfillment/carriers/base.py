"""The carrier adapter interface, in our terms; adapters translate to each carrier's wire format.

An adapter raises `CarrierUnavailable` for anything worth retrying (connection refused, timeout,
5xx, the carrier's own "try later" codes) and `CarrierRejected` for a request the carrier will
never accept as sent (bad address, unknown company code): the caller retries the first with
backoff and opens an exception case for the second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class TrackingStatus(StrEnum):
    """A carrier's tracking state in our words (the shipment statuses after `shipped`)."""

    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    RETURNED = "returned"
    EXCEPTION = "exception"


class CarrierError(Exception):
    """Base of carrier failures; `code` is the carrier's own code when it gave one."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class CarrierUnavailable(CarrierError):
    """Retry later: the carrier could not be reached or asked us to come back."""


class CarrierRejected(CarrierError):
    """Never retry as is: the carrier refused the request."""


class PushRejected(CarrierError):
    """A push that fails verification (bad sign, unparseable): answer with `reject_body`."""


@dataclass(frozen=True, slots=True)
class Party:
    name: str
    phone: str
    province: str
    city: str
    district: str
    address: str


@dataclass(frozen=True, slots=True)
class WaybillRequest:
    reference: str  # our idempotency reference: the shipment's id as text ("S123")
    company: str  # the carrier company code, e.g. "shunfeng", "zhongtong"
    sender: Party
    recipient: Party
    items: tuple[tuple[str, int], ...]  # (sku, quantity)
    weight_grams: int = 0


@dataclass(frozen=True, slots=True)
class Waybill:
    company: str
    waybill_no: str
    label: str = ""  # a printable label reference (URL or task id) when the carrier gives one


@dataclass(frozen=True, slots=True)
class TrackingEvent:
    occurred_at: datetime  # UTC, aware (converted from the carrier's local time)
    status: TrackingStatus
    state_code: str  # the carrier's own state code ("3" = 签收 for Kuaidi100)
    description: str  # the carrier's words ("已签收，签收人是本人")
    location: str = ""


@dataclass(frozen=True, slots=True)
class TrackingUpdate:
    """What a push or a query says about one waybill."""

    company: str
    waybill_no: str
    events: tuple[TrackingEvent, ...]  # any order; the caller sorts by occurred_at
    state: TrackingStatus | None  # the carrier's current overall state, when it gives one
    state_code: str = ""
    finished: bool = False  # the carrier will send nothing more (Kuaidi100 "shutdown"/"abort")
    message: str = ""


@dataclass(frozen=True, slots=True)
class Subscription:
    company: str
    waybill_no: str
    callback_url: str
    phone: str = ""  # some companies (SF) need the recipient's phone to track
    extra: Mapping[str, str] = field(default_factory=dict)


class CarrierAdapter(Protocol):
    """What fulfillment needs from a carrier integration."""

    code: str  # the adapter's code in settings and the database, e.g. "kuaidi100"

    async def create_waybill(self, request: WaybillRequest) -> Waybill:
        """Ask the carrier for a waybill number; idempotent on `request.reference`."""
        ...

    async def subscribe(self, subscription: Subscription) -> None:
        """Ask the carrier to push tracking for a waybill to our callback (already → no error)."""
        ...

    async def query(self, company: str, waybill_no: str, phone: str = "") -> TrackingUpdate:
        """The carrier's current tracking for one waybill (real-time query)."""
        ...

    def parse_push(self, form: Mapping[str, str]) -> TrackingUpdate:
        """Verify and parse one push; raises `PushRejected` when it is forged or malformed."""
        ...

    def accept_body(self) -> tuple[int, str, str]:
        """(status, content type, body) to answer a push we stored."""
        ...

    def reject_body(self, reason: str) -> tuple[int, str, str]:
        """(status, content type, body) to answer a push we refused."""
        ...
