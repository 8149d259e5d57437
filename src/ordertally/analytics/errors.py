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


class TimelineOutOfScope(AnalyticsError):
    status = 403
    code = "analytics.out_of_scope"
    title = "This order belongs to a channel outside your scope"


class ChannelOutOfScope(AnalyticsError):
    status = 403
    code = "analytics.out_of_scope"
    title = "This channel is outside your scope"
