"""The auth package's problem codes (401 and 403 live in core.errors: every domain raises them)."""

from __future__ import annotations

from ordertally.core.errors import NotFound


class ApiKeyNotFound(NotFound):
    code = "auth.key_not_found"
    title = "No such API key"
