"""The order lifecycle as data: every status change is one row of TRANSITIONS.

The admin UI draws this table, the docs print it and the tests enumerate it. `transition()` in
the service is the only code that changes `sales_order.status`.
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


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
TERMINAL: frozenset[Status] = frozenset({Status.COMPLETED, Status.CLOSED, Status.REFUNDED})


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


@dataclass(frozen=True, slots=True)
class Transition:
    name: str
    sources: frozenset[Status]
    target: Status
    actors: frozenset[ActorKind]
    event_type: str
    evidence_required_for: frozenset[ActorKind] = frozenset()
    blocked_by_holds: bool = False


def _t(
    name: str,
    sources: tuple[Status, ...],
    target: Status,
    actors: tuple[ActorKind, ...],
    event_type: str,
    *,
    evidence_for: tuple[ActorKind, ...] = (),
    blocked_by_holds: bool = False,
) -> Transition:
    return Transition(
        name,
        frozenset(sources),
        target,
        frozenset(actors),
        event_type,
        frozenset(evidence_for),
        blocked_by_holds,
    )


S, A = Status, ActorKind

# Creation is not a transition of an existing order: `create` (pending_payment) and
# `import_paid` (paid) name the first audit row of a new order.
CREATION: dict[str, tuple[Status, frozenset[ActorKind]]] = {
    "create": (S.PENDING_PAYMENT, frozenset({A.API, A.CHANNEL_SYNC, A.OPERATOR})),
    "import_paid": (S.PAID, frozenset({A.CHANNEL_SYNC})),
}

TRANSITIONS: tuple[Transition, ...] = (
    _t(
        "payment_succeeded",
        (S.PENDING_PAYMENT,),
        S.PAID,
        (A.PAYMENT_CALLBACK, A.COMPENSATION_QUERY, A.FINANCE, A.CHANNEL_SYNC),
        "OrderPaid",
        evidence_for=(A.FINANCE, A.CHANNEL_SYNC),
    ),
    _t("payment_timeout", (S.PENDING_PAYMENT,), S.CLOSED, (A.SCHEDULER,), "OrderClosed"),
    _t(
        "cancel",
        (S.PENDING_PAYMENT,),
        S.CLOSED,
        (A.BUYER, A.OPERATOR, A.CHANNEL_SYNC),
        "OrderCancelled",
    ),
    _t("allocate", (S.PAID,), S.ALLOCATED, (A.ALLOCATOR,), "OrderAllocated", blocked_by_holds=True),
    _t(
        "start_fulfillment",
        (S.ALLOCATED,),
        S.FULFILLING,
        (A.WAREHOUSE,),
        "OrderFulfillmentStarted",
        blocked_by_holds=True,
    ),
    _t("ship", (S.FULFILLING,), S.SHIPPED, (A.WAREHOUSE,), "OrderShipped", blocked_by_holds=True),
    _t("deliver", (S.SHIPPED,), S.DELIVERED, (A.CARRIER,), "OrderDelivered"),
    _t("complete", (S.DELIVERED,), S.COMPLETED, (A.SCHEDULER, A.BUYER), "OrderCompleted"),
    _t(
        "reopen_paid",
        (S.CLOSED,),
        S.PAID,
        (A.PAYMENT_CALLBACK, A.COMPENSATION_QUERY, A.FINANCE, A.CHANNEL_SYNC),
        "OrderReopenedPaid",
        evidence_for=(A.FINANCE, A.CHANNEL_SYNC),
    ),
    _t(
        "refund",
        (S.PAID, S.ALLOCATED, S.FULFILLING),
        S.REFUNDED,
        (A.FINANCE, A.PAYMENT_CALLBACK),
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
        }
        for t in TRANSITIONS
    ]
