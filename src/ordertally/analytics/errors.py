"""Errors of the analytics domain."""

from ordertally.core.errors import OrdertallyError


class AnalyticsError(OrdertallyError):
    status = 409
    code = "analytics.error"
    title = "Analytics error"


class InvalidAnalyticsRequest(AnalyticsError):
    status = 422
    code = "analytics.invalid"
    title = "Invalid analytics request"


class UnknownIndustryTemplate(AnalyticsError):
    status = 422
    code = "analytics.unknown_template"
    title = "Unknown industry template"


class TimelineNotFound(AnalyticsError):
    status = 404
    code = "analytics.timeline_not_found"
    title = "No timeline for this order"
