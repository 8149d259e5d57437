"""The error every simulator raises to refuse a request or a control action."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class SimError(Exception):
    """A refused action, with the HTTP status and the platform's (or the control API's) code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def problem_response(exc: SimError) -> JSONResponse:
    """A control endpoint's answer to a refused action: {"code", "message"} with its status."""
    return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)
