"""Errors of the exceptions domain, each with its HTTP status and stable code."""

from ordertally.core.errors import OrdertallyError


class ExceptionCaseError(OrdertallyError):
    status = 409
    code = "exceptions.error"
    title = "Exception case error"


class StillShort(ExceptionCaseError):
    code = "exceptions.still_short"
    title = "The stock this hold waits for is still short; the hold stays open"
