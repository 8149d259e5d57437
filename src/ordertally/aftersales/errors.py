"""After-sales errors with stable codes (RFC 9457 problem details)."""

from __future__ import annotations

from ordertally.core.errors import OrdertallyError


class AftersaleError(OrdertallyError):
    status = 409
    code = "aftersales.error"
    title = "After-sales request refused"


class CaseNotFound(AftersaleError):
    status = 404
    code = "aftersales.case_not_found"
    title = "No such after-sales case"


class IllegalCaseTransition(AftersaleError):
    code = "aftersales.illegal_transition"
    title = "The case cannot take this step from where it is"


class CaseConflict(AftersaleError):
    code = "aftersales.conflict"
    title = "The case changed meanwhile; read it again"


class InvalidCase(AftersaleError):
    status = 400
    code = "aftersales.invalid"
    title = "The case does not fit the order"


class RefundExceedsPaid(AftersaleError):
    code = "aftersales.refund_exceeds_paid"
    title = "The refund would take the order's refunds past what was paid"


class ReturnFirst(AftersaleError):
    code = "aftersales.return_first"
    title = "This case type is refunded after the warehouse receives the goods"


class FinanceApprovalRequired(AftersaleError):
    status = 403
    code = "aftersales.finance_approval_required"
    title = "A refund this large needs finance's approval"


class ParcelNotFound(AftersaleError):
    status = 404
    code = "aftersales.parcel_not_found"
    title = "No such returned parcel"


class WaitingForStock(AftersaleError):
    code = "aftersales.waiting_for_stock"
    title = "The goods to send again are not in stock"


class ReportRefused(AftersaleError):
    status = 400
    code = "aftersales.report_refused"
    title = "The file is not a platform returns report we read"
