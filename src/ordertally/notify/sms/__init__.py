"""SMS gateway adapters behind one interface: send one templated message to one phone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SmsSent:
    """What the gateway answered for an accepted message."""

    message_id: str
    request_id: str


class SmsFailed(Exception):
    """The gateway refused or could not be reached; `retryable` says whether to try again."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.retryable = retryable


class SmsGateway(Protocol):
    name: str

    async def send(
        self, phone: str, template_code: str, params: dict[str, str], out_id: str
    ) -> SmsSent:
        """Send one message; raise SmsFailed when it was not accepted."""
        ...
