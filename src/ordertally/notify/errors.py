"""Errors of the notify domain, each with its HTTP status and stable code."""

from ordertally.core.errors import OrdertallyError


class NotifyError(OrdertallyError):
    status = 409
    code = "notify.error"
    title = "Notification error"


class TargetsInvalid(NotifyError):
    status = 500
    code = "notify.targets_invalid"
    title = "The notification targets in the settings are not valid"


class NotificationNotFound(NotifyError):
    status = 404
    code = "notify.not_found"
    title = "Notification not found"


class NotificationNotDead(NotifyError):
    code = "notify.not_dead"
    title = "Only a dead notification can be requeued"


class TargetNotFound(NotifyError):
    status = 404
    code = "notify.target_not_found"
    title = "No configured target has this key"


class TestPhoneRequired(NotifyError):
    status = 422
    code = "notify.test_phone_required"
    title = "A test SMS needs a phone number"
