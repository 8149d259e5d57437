"""Errors of the exceptions domain, each with its HTTP status and stable code."""

from ordertally.core.errors import OrdertallyError


class ExceptionCaseError(OrdertallyError):
    status = 409
    code = "exceptions.error"
    title = "Exception case error"


class StillShort(ExceptionCaseError):
    code = "exceptions.still_short"
    title = "The stock this hold waits for is still short; the hold stays open"


class EvidenceMissing(ExceptionCaseError):
    code = "exceptions.evidence_missing"
    title = "The hand-off lacks the evidence the receiving role requires"


class CaseNotActive(ExceptionCaseError):
    code = "exceptions.not_active"
    title = "The case is not in a state that allows this action"


class UnknownCaseType(ExceptionCaseError):
    status = 404
    code = "exceptions.unknown_type"
    title = "No such case type in the registry"
