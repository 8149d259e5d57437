"""Domain errors with stable codes, rendered as RFC 9457 problem details."""

from __future__ import annotations

from typing import Any, ClassVar


class OrdertallyError(Exception):
    """Base of every error a client may see; subclasses fix status, code and title."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "error"
    title: ClassVar[str] = "Request failed"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 body."""
        return problem(self.status, self.code, self.title, self.detail, instance, **self.extra)


def problem(
    status: int, code: str, title: str, detail: str, instance: str | None = None, /, **extra: Any
) -> dict[str, Any]:
    """Build a problem-details document with our stable `code` extension member."""
    body: dict[str, Any] = {
        "type": f"urn:ordertally:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if k not in body})
    return body


class NotFound(OrdertallyError):
    status = 404
    code = "not_found"
    title = "Not found"


class Unauthenticated(OrdertallyError):
    status = 401
    code = "auth.unauthenticated"
    title = "Missing or invalid API key"


class Forbidden(OrdertallyError):
    status = 403
    code = "auth.forbidden"
    title = "This role may not do that"


class InvalidRequest(OrdertallyError):
    status = 422
    code = "request.invalid"
    title = "The request is not valid"


class PayloadTooLarge(OrdertallyError):
    status = 413
    code = "request.too_large"
    title = "Request body too large"


class Conflict(OrdertallyError):
    status = 409
    code = "conflict"
    title = "Conflict"
