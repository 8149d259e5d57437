"""The order lifecycle as data: every status change is one row of TRANSITIONS.

The admin UI draws this table, the docs print it and the tests enumerate it. Each row carries
its stock effect (`StockEffect`), which `orders.transitions` runs through one dispatcher;
`transitions.transition()` is the only code that changes `sales_order.status`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"
    ALLOCATED = "allocated"
    FULFILLING = "fulfilling"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    COMPLETED = "completed"
    CLOSED = "closed"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
TERMINAL: frozenset[Status] = frozenset({Status.COMPLETED, Status.CLOSED, Status.REFUNDED})


class Event(StrEnum):
    """The name of every audit event of an order: the two creations and the transitions."""

    CREATE = "create"
    IMPORT_PAID = "import_paid"
    PAYMENT_SUCCEEDED = "payment_succeeded"
    PAYMENT_TIMEOUT = "payment_timeout"
    CANCEL = "cancel"
    ALLOCATE = "allocate"
    START_FULFILLMENT = "start_fulfillment"
    SHIP = "ship"
    DELIVER = "deliver"
    COMPLETE = "complete"
    REOPEN_PAID = "reopen_paid"
    REFUND = "refund"
    CONFIRM_RECEIPT = "confirm_receipt"
    AFTERSALE_PARTIAL_REFUND = "aftersale_partial_refund"
    AFTERSALE_REFUND = "aftersale_refund"
    REVIEW_PASS = "review_pass"
    REVIEW_HOLD = "review_hold"
    REVIEW_EDIT = "review_edit"


class StockEffect(StrEnum):
    """What a transition does to the order's stock, in the same transaction."""

    NONE = "none"
    COMMIT = "commit"  # held reservations become committed; units no longer held are reserved
    RELEASE = "release"  # live reservations go back to available
    CONSUME = "consume"  # committed reservations leave the warehouse


class ActorKind(StrEnum):
    API = "api"  # an API client creating an order
    CHANNEL_SYNC = "channel_sync"
    PAYMENT_CALLBACK = "payment_callback"
    COMPENSATION_QUERY = "compensation_query"
    FINANCE = "finance"
    SCHEDULER = "scheduler"
    BUYER = "buyer"
    OPERATOR = "operator"
    ALLOCATOR = "allocator"
    WAREHOUSE = "warehouse"
    CARRIER = "carrier"
    AFTERSALES = "aftersales"  # a refund confirmed by the provider or the platform (aftersales/)


@dataclass(frozen=True, slots=True)
class Transition:
    name: str
    sources: frozenset[Status]
    target: Status
    actors: frozenset[ActorKind]
    event_type: str
    evidence_required_for: frozenset[ActorKind] = frozenset()
    blocked_by_holds: bool = False
    stock_effect: StockEffect = StockEffect.NONE


@dataclass(frozen=True, slots=True)
class Actor:
    """Who triggers a change, from where, on what evidence."""

    kind: ActorKind
    id: str
    source_ip: str | None = None
    evidence_ref: str | None = None
    note: str | None = None


def _t(
    name: Event,
    sources: tuple[Status, ...],
    target: Status,
    actors: tuple[ActorKind, ...],
    event_type: str,
    *,
    evidence_for: tuple[ActorKind, ...] = (),
    blocked_by_holds: bool = False,
    stock: StockEffect = StockEffect.NONE,
) -> Transition:
    return Transition(
        name.value,
        frozenset(sources),
        target,
        frozenset(actors),
        event_type,
        frozenset(evidence_for),
        blocked_by_holds,
        stock,
    )


S, A, E, X = Status, ActorKind, Event, StockEffect

# Creation is not a transition of an existing order: `create` (pending_payment) and
# `import_paid` (paid) name the first audit row of a new order.
CREATION: dict[str, tuple[Status, frozenset[ActorKind]]] = {
    E.CREATE: (S.PENDING_PAYMENT, frozenset({A.API, A.CHANNEL_SYNC, A.OPERATOR})),
    E.IMPORT_PAID: (S.PAID, frozenset({A.CHANNEL_SYNC})),
}

TRANSITIONS: tuple[Transition, ...] = (
    _t(
        E.PAYMENT_SUCCEEDED,
        (S.PENDING_PAYMENT,),
        S.PAID,
        (A.PAYMENT_CALLBACK, A.COMPENSATION_QUERY, A.FINANCE, A.CHANNEL_SYNC),
        "OrderPaid",
        evidence_for=(A.FINANCE, A.CHANNEL_SYNC),
        stock=X.COMMIT,
    ),
    _t(
        E.PAYMENT_TIMEOUT,
        (S.PENDING_PAYMENT,),
        S.CLOSED,
        (A.SCHEDULER,),
        "OrderClosed",
        stock=X.RELEASE,
    ),
    _t(
        E.CANCEL,
        (S.PENDING_PAYMENT,),
        S.CLOSED,
        (A.BUYER, A.OPERATOR, A.CHANNEL_SYNC),
        "OrderCancelled",
        stock=X.RELEASE,
    ),
    # Order review (审单, issue 17): a paid order the auto-review strategy did not pass waits
    # in review (a blocking `order_review` case) with its reasons; cs (then finance when a rule
    # asked) pass it, edit it (address, remark, warehouse) or hold it. Each is a row here, on
    # `paid` and back to `paid`: the audit trail and the events show every review decision,
    # and the status the dashboard, search, exports and analytics know stays `paid` (ADR 0034).
    _t(
        E.REVIEW_PASS,
        (S.PAID,),
        S.PAID,
        (A.OPERATOR, A.FINANCE, A.SCHEDULER),
        "OrderReviewPassed",
    ),
    _t(E.REVIEW_HOLD, (S.PAID,), S.PAID, (A.OPERATOR, A.FINANCE), "OrderReviewHeld"),
    _t(E.REVIEW_EDIT, (S.PAID,), S.PAID, (A.OPERATOR, A.FINANCE), "OrderReviewEdited"),
    _t(E.ALLOCATE, (S.PAID,), S.ALLOCATED, (A.ALLOCATOR,), "OrderAllocated", blocked_by_holds=True),
    _t(
        E.START_FULFILLMENT,
        (S.ALLOCATED,),
        S.FULFILLING,
        (A.WAREHOUSE,),
        "OrderFulfillmentStarted",
        blocked_by_holds=True,
    ),
    _t(
        E.SHIP,
        (S.FULFILLING,),
        S.SHIPPED,
        (A.WAREHOUSE,),
        "OrderShipped",
        blocked_by_holds=True,
        stock=X.CONSUME,
    ),
    _t(E.DELIVER, (S.SHIPPED,), S.DELIVERED, (A.CARRIER,), "OrderDelivered"),
    _t(E.COMPLETE, (S.DELIVERED,), S.COMPLETED, (A.SCHEDULER, A.BUYER), "OrderCompleted"),
    _t(
        # A reopened order's reservation was released at close: the commit reserves again.
        E.REOPEN_PAID,
        (S.CLOSED,),
        S.PAID,
        (A.PAYMENT_CALLBACK, A.COMPENSATION_QUERY, A.FINANCE, A.CHANNEL_SYNC),
        "OrderReopenedPaid",
        evidence_for=(A.FINANCE, A.CHANNEL_SYNC),
        stock=X.COMMIT,
    ),
    _t(
        E.REFUND,
        (S.PAID, S.ALLOCATED, S.FULFILLING),
        S.REFUNDED,
        (A.FINANCE, A.PAYMENT_CALLBACK),
        "OrderRefunded",
        stock=X.RELEASE,
    ),
    # After-sales (issue 18): the platform confirms receipt before the window ends, and refunds
    # after shipment, confirmed by the provider or the platform, move the order on.
    _t(
        E.CONFIRM_RECEIPT,
        (S.DELIVERED,),
        S.COMPLETED,
        (A.CHANNEL_SYNC,),
        "OrderCompleted",
        evidence_for=(A.CHANNEL_SYNC,),
    ),
    _t(
        E.AFTERSALE_PARTIAL_REFUND,
        (S.SHIPPED, S.DELIVERED, S.COMPLETED, S.PARTIALLY_REFUNDED),
        S.PARTIALLY_REFUNDED,
        (A.AFTERSALES,),
        "OrderPartiallyRefunded",
    ),
    _t(
        E.AFTERSALE_REFUND,
        (S.SHIPPED, S.DELIVERED, S.COMPLETED, S.PARTIALLY_REFUNDED),
        S.REFUNDED,
        (A.AFTERSALES,),
        "OrderRefunded",
    ),
)

BY_NAME: dict[str, Transition] = {t.name: t for t in TRANSITIONS}


def find(name: str) -> Transition | None:
    """The transition called `name`, if there is one."""
    return BY_NAME.get(name)


def allowed_from(status: Status) -> list[Transition]:
    """Transitions that may leave a status."""
    return [t for t in TRANSITIONS if status in t.sources]


def as_rows() -> list[dict[str, object]]:
    """The table as plain rows, for docs, the UI and `ordertally transitions`."""
    return [
        {
            "transition": t.name,
            "from": sorted(s.value for s in t.sources),
            "to": t.target.value,
            "actors": sorted(a.value for a in t.actors),
            "event": t.event_type,
            "evidence_required_for": sorted(a.value for a in t.evidence_required_for),
            "blocked_by_holds": t.blocked_by_holds,
            "stock_effect": t.stock_effect.value,
        }
        for t in TRANSITIONS
    ]
