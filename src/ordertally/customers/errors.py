"""Errors of the customers domain, each with its HTTP status and stable code."""

from ordertally.core.errors import OrdertallyError


class CustomerError(OrdertallyError):
    status = 409
    code = "customer.error"
    title = "Customer error"


class CustomerNotFound(CustomerError):
    status = 404
    code = "customer.not_found"
    title = "Customer not found"


class TagNotFound(CustomerError):
    status = 404
    code = "customer.tag_not_found"
    title = "The customer does not carry this tag"


class CustomerOutOfScope(CustomerError):
    status = 403
    code = "customer.out_of_scope"
    title = "This customer has no order from your channel accounts"


class LookupRequired(CustomerError):
    status = 422
    code = "customer.lookup_required"
    title = "Give exactly one of phone or tag"
