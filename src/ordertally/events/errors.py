"""Errors of the event machinery."""

from ordertally.core.errors import OrdertallyError


class EventTooLarge(OrdertallyError):
    status = 413
    code = "event.too_large"
    title = "Event exceeds the size limit"


class UnknownEventType(OrdertallyError):
    status = 500
    code = "event.unknown_type"
    title = "Event type has no registered schema"
