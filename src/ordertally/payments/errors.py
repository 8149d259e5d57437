"""Errors of the payments domain, each with its HTTP status and stable code."""

from ordertally.core.errors import OrdertallyError


class PaymentError(OrdertallyError):
    status = 409
    code = "payment.error"
    title = "Payment error"


class ProviderOff(PaymentError):
    status = 404
    code = "payment.provider_off"
    title = "This payment provider is not configured"


class ProviderUnavailable(PaymentError):
    status = 502
    code = "payment.provider_unavailable"
    title = "The payment provider did not answer as expected"


class OrderNotPayable(PaymentError):
    code = "payment.order_not_payable"
    title = "The order is not waiting for payment"


class UnsupportedCurrency(PaymentError):
    status = 422
    code = "payment.unsupported_currency"
    title = "The provider does not take this currency"


class ManualPaymentNotFound(PaymentError):
    status = 404
    code = "payment.manual_not_found"
    title = "Manual payment request not found"


class ManualPaymentNotPending(PaymentError):
    code = "payment.manual_not_pending"
    title = "The manual payment request was already decided"


class SameApprover(PaymentError):
    status = 403
    code = "payment.same_approver"
    title = "A manual payment must be approved by a second finance user"


class ManualAmountMismatch(PaymentError):
    status = 422
    code = "payment.manual_amount_mismatch"
    title = "The amount does not equal the order total"


class StatementInvalid(PaymentError):
    status = 422
    code = "payment.statement_invalid"
    title = "The statement file is not in the provider's format"
