"""The life of a payment attempt as data: every change of `payment.state` is one row of
TRANSITIONS, applied by the repository as a compare-and-set (`WHERE state IN (sources)`). A
manual payment request (补单) has its own small table, MANUAL_TRANSITIONS, applied the same way.

The docs print this table and the tests enumerate it, like `orders/state_machine.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PaymentState(StrEnum):
    PENDING = "pending"  # opened at the provider, waiting for the buyer
    PAID = "paid"  # the order total was received
    CLOSED = "closed"  # the provider says the trade ended unpaid
    FAILED = "failed"  # the provider refused to open the attempt
    MISMATCH = "mismatch"  # money was received, in a wrong amount or currency


# Every attempt starts here (`open_attempt`); the order is the table's CHECK constraint's.
OPENED = PaymentState.PENDING
PAYMENT_STATES: tuple[str, ...] = tuple(s.value for s in PaymentState)


@dataclass(frozen=True, slots=True)
class PaymentTransition:
    name: str
    sources: frozenset[PaymentState]
    target: PaymentState
    cause: str

    @property
    def source_values(self) -> tuple[str, ...]:
        """The source states as stored strings, in a fixed order (for SQL)."""
        return tuple(sorted(s.value for s in self.sources))


def _t(
    name: str, sources: tuple[PaymentState, ...], target: PaymentState, cause: str
) -> PaymentTransition:
    return PaymentTransition(name, frozenset(sources), target, cause)


P = PaymentState

# Money received is recorded whatever the attempt looked like before it arrived (a late
# notification for a closed or failed attempt is still money): only a second receipt is refused.
OPEN_REFUSED = _t("open_refused", (P.PENDING,), P.FAILED, "the provider refused to open it")
QUERIED_CLOSED = _t(
    "queried_closed", (P.PENDING,), P.CLOSED, "an active query says the trade ended unpaid"
)
RECEIVED = _t(
    "received",
    (P.PENDING, P.CLOSED, P.FAILED),
    P.PAID,
    "a notification, query or statement reports the expected amount",
)
RECEIVED_WRONG_AMOUNT = _t(
    "received_wrong_amount",
    (P.PENDING, P.CLOSED, P.FAILED),
    P.MISMATCH,
    "a notification, query or statement reports another amount or currency",
)

TRANSITIONS: tuple[PaymentTransition, ...] = (
    OPEN_REFUSED,
    QUERIED_CLOSED,
    RECEIVED,
    RECEIVED_WRONG_AMOUNT,
)
BY_NAME: dict[str, PaymentTransition] = {t.name: t for t in TRANSITIONS}

# States in which the attempt holds the buyer's money (never closed for timeout, never paid twice).
MONEY_RECEIVED: frozenset[PaymentState] = frozenset({P.PAID, P.MISMATCH})


def receipt(matches: bool) -> PaymentTransition:
    """The transition a receipt of money takes: the expected amount or not."""
    return RECEIVED if matches else RECEIVED_WRONG_AMOUNT


def allowed_from(state: PaymentState) -> list[PaymentTransition]:
    """Transitions that may leave a state."""
    return [t for t in TRANSITIONS if state in t.sources]


def as_rows() -> list[dict[str, object]]:
    """The table as plain rows, for docs and tests."""
    return [
        {"transition": t.name, "from": list(t.source_values), "to": t.target.value}
        for t in TRANSITIONS
    ]


# --- manual payment requests (补单) -------------------------------------------------------------


class ManualState(StrEnum):
    PENDING_APPROVAL = "pending_approval"  # finance vouched with evidence; waits for a second
    APPROVED = "approved"  # a second finance user approved: the order was paid on the evidence
    REJECTED = "rejected"  # a second finance user refused it
    SUPERSEDED = "superseded"  # the order was paid otherwise before the decision


MANUAL_STATES: tuple[str, ...] = tuple(s.value for s in ManualState)


@dataclass(frozen=True, slots=True)
class ManualTransition:
    name: str
    source: ManualState
    target: ManualState


M = ManualState
APPROVE = ManualTransition("approve", M.PENDING_APPROVAL, M.APPROVED)
REJECT = ManualTransition("reject", M.PENDING_APPROVAL, M.REJECTED)
SUPERSEDE = ManualTransition("supersede", M.PENDING_APPROVAL, M.SUPERSEDED)
MANUAL_TRANSITIONS: tuple[ManualTransition, ...] = (APPROVE, REJECT, SUPERSEDE)
