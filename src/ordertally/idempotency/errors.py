"""Errors of idempotent requests, each with its HTTP status and stable code."""

from ordertally.core.errors import OrdertallyError


class IdempotencyMismatch(OrdertallyError):
    status = 422
    code = "idempotency.mismatch"
    title = "This Idempotency-Key was used with a different request"


class IdempotencyInFlight(OrdertallyError):
    status = 409
    code = "idempotency.in_flight"
    title = "A request with this Idempotency-Key is still being processed"
