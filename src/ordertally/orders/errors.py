"""Errors of the orders domain, each with its HTTP status and stable code."""

from ordertally.core.errors import OrdertallyError


class OrderError(OrdertallyError):
    status = 409
    code = "order.error"
    title = "Order error"


class OrderNotFound(OrderError):
    status = 404
    code = "order.not_found"
    title = "Order not found"


class IllegalTransition(OrderError):
    code = "order.illegal_transition"
    title = "This transition is not allowed from the order's status"


class ActorNotAllowed(OrderError):
    status = 403
    code = "order.actor_not_allowed"
    title = "This actor may not trigger this transition"


class EvidenceRequired(OrderError):
    status = 422
    code = "order.evidence_required"
    title = "This transition needs an evidence reference"


class OrderOnHold(OrderError):
    code = "order.on_hold"
    title = "The order is on hold"


class TransitionConflict(OrderError):
    code = "order.conflict"
    title = "The order changed concurrently"


class SuspectedDuplicate(OrderError):
    code = "order.suspected_duplicate"
    title = "An identical order was placed moments ago"


class InvalidOrder(OrderError):
    status = 422
    code = "order.invalid"
    title = "The order is not valid"


class PaymentReceived(OrderError):
    code = "order.payment_received"
    title = "Money was received for this order (or its provider could not say); it stays open"


class InvalidFxRate(OrderError):
    status = 422
    code = "fx.invalid_rate"
    title = "The exchange rate is not valid"


class OrderOutOfScope(OrderError):
    """A channel-scoped caller (key or user) and another channel account's order: 403, like
    the contact route's refusal (ADR 0026 addendum)."""

    status = 403
    code = "order.out_of_scope"
    title = "This order is outside the caller's channel accounts"


class ContactNotAllowed(OrderError):
    status = 403
    code = "order.contact_not_allowed"
    title = "This caller may not see this order's contact"


class SavedViewNotFound(OrderError):
    status = 404
    code = "saved_view.not_found"
    title = "This saved view does not exist"


class SavedViewNotYours(OrderError):
    status = 403
    code = "saved_view.not_yours"
    title = "Only its owner (or an admin, for a shared view) may delete this saved view"


class SavedViewsFull(OrderError):
    code = "saved_view.too_many"
    title = "This user has saved as many views as allowed; delete one first"
