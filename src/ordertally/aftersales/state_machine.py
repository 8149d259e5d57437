"""The after-sales case lifecycle as data, like the order's: one row per allowed change.

requested → approved | rejected → awaiting_return → returned → inspected → refunded | reshipped |
exchanged → closed. Types that need no goods back skip the return steps (refund only goes from
approved to refunded; a reshipment from approved to reshipped). A request withdrawn before any
money or goods moved (requested, approved, awaiting return) goes straight to closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CaseType(StrEnum):
    REFUND_ONLY = "refund_only"  # 仅退款 (before or after shipment, intercept in transit)
    RETURN_REFUND = "return_refund"  # 退货退款
    EXCHANGE = "exchange"  # 换货
    RESHIP = "reship"  # 补发
    REFUSED = "refused"  # 拒收 (the parcel comes back unopened)


class CaseStatus(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    AWAITING_RETURN = "awaiting_return"
    RETURNED = "returned"
    INSPECTED = "inspected"
    REFUNDED = "refunded"
    RESHIPPED = "reshipped"
    EXCHANGED = "exchanged"
    CLOSED = "closed"


class Responsibility(StrEnum):
    BUYER = "buyer"
    MERCHANT = "merchant"
    WAREHOUSE = "warehouse"
    CARRIER = "carrier"
    SUPPLIER = "supplier"


class GoodsStatus(StrEnum):
    """Where the goods are (聚水潭's 货物状态)."""

    NOT_RECEIVED = "buyer_not_received"
    RECEIVED = "buyer_received"
    RETURNING = "buyer_returned"
    SELLER_RECEIVED = "seller_received"


CASE_TYPES: tuple[str, ...] = tuple(t.value for t in CaseType)
CASE_STATUSES: tuple[str, ...] = tuple(s.value for s in CaseStatus)
RESPONSIBILITIES: tuple[str, ...] = tuple(r.value for r in Responsibility)
GOODS_STATUSES: tuple[str, ...] = tuple(g.value for g in GoodsStatus)
OPEN: frozenset[str] = frozenset(CASE_STATUSES) - {CaseStatus.REJECTED, CaseStatus.CLOSED}
# Where a buyer may still take the request back: nothing refunded, nothing received yet.
WITHDRAWABLE: frozenset[str] = frozenset(
    {CaseStatus.REQUESTED, CaseStatus.APPROVED, CaseStatus.AWAITING_RETURN}
)
# Types whose goods come back to a warehouse before the case ends.
RETURNS_GOODS: frozenset[CaseType] = frozenset(
    {CaseType.RETURN_REFUND, CaseType.EXCHANGE, CaseType.REFUSED}
)
# Types that move money back to the buyer.
MOVES_MONEY: frozenset[CaseType] = frozenset(
    {CaseType.REFUND_ONLY, CaseType.RETURN_REFUND, CaseType.REFUSED}
)


@dataclass(frozen=True, slots=True)
class CaseTransition:
    name: str
    sources: frozenset[CaseStatus]
    target: CaseStatus
    types: frozenset[CaseType]  # the case types this row applies to
    event_type: str  # the outbox event


def _t(
    name: str,
    sources: tuple[CaseStatus, ...],
    target: CaseStatus,
    types: tuple[CaseType, ...] | None = None,
) -> CaseTransition:
    event = "Aftersale" + "".join(part.capitalize() for part in target.value.split("_"))
    return CaseTransition(
        name, frozenset(sources), target, frozenset(types or tuple(CaseType)), event
    )


C, T = CaseStatus, CaseType

TRANSITIONS: tuple[CaseTransition, ...] = (
    _t("approve", (C.REQUESTED,), C.APPROVED),
    _t("reject", (C.REQUESTED,), C.REJECTED),
    _t("await_return", (C.APPROVED,), C.AWAITING_RETURN, (T.RETURN_REFUND, T.EXCHANGE, T.REFUSED)),
    _t("receive", (C.AWAITING_RETURN,), C.RETURNED, (T.RETURN_REFUND, T.EXCHANGE, T.REFUSED)),
    _t("inspect", (C.RETURNED,), C.INSPECTED, (T.RETURN_REFUND, T.EXCHANGE, T.REFUSED)),
    # "Refund first": a refund only case, or a trusted buyer's return refunded before it arrives.
    _t(
        "refund",
        (C.APPROVED, C.AWAITING_RETURN, C.RETURNED, C.INSPECTED),
        C.REFUNDED,
        (T.REFUND_ONLY, T.RETURN_REFUND, T.REFUSED),
    ),
    _t("reship", (C.APPROVED,), C.RESHIPPED, (T.RESHIP,)),
    _t("exchange", (C.INSPECTED,), C.EXCHANGED, (T.EXCHANGE,)),
    _t("close", (C.REFUNDED, C.RESHIPPED, C.EXCHANGED, C.INSPECTED), C.CLOSED),
    # The buyer takes the request back (撤销申请; a platform lists it closed) before any money
    # or goods moved: nothing to undo (the service refuses while a refund is on its way).
    _t("withdraw", tuple(CaseStatus(s) for s in sorted(WITHDRAWABLE)), C.CLOSED),
)

BY_NAME: dict[str, CaseTransition] = {t.name: t for t in TRANSITIONS}


def find(name: str) -> CaseTransition | None:
    """The case transition called `name`, if there is one."""
    return BY_NAME.get(name)


def as_rows() -> list[dict[str, object]]:
    """The table as plain rows (docs, UI, tests)."""
    return [
        {
            "transition": t.name,
            "from": sorted(s.value for s in t.sources),
            "to": t.target.value,
            "types": sorted(x.value for x in t.types),
            "event": t.event_type,
        }
        for t in TRANSITIONS
    ]
