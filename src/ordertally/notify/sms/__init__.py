"""SMS gateway adapters behind one interface: send one templated message to one phone, or
several messages of one template in one call where the gateway has such a call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SmsSent:
    """What the gateway answered for an accepted message (or an accepted batch: one id)."""

    message_id: str
    request_id: str


@dataclass(frozen=True, slots=True)
class SmsMessage:
    """One message of a batch: the clear phone (E.164), the template's variables, our id."""

    phone: str
    params: dict[str, str]
    out_id: str


class SmsFailed(Exception):
    """The gateway refused or could not be reached; `retryable` says whether to try again.
    `per_message` marks a batch's business refusal (a number, its content or its rate): the
    gateway took none of the batch, and each message may fare differently when sent alone."""

    def __init__(
        self, code: str, message: str, *, retryable: bool, per_message: bool = False
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.retryable = retryable
        self.per_message = per_message


class SmsGateway(Protocol):
    name: str
    # Most messages one call may carry (1: no batch call, `send_batch` is never used).
    batch_limit: int

    async def send(
        self, phone: str, template_code: str, params: dict[str, str], out_id: str
    ) -> SmsSent:
        """Send one message; raise SmsFailed when it was not accepted."""
        ...

    async def send_batch(self, template_code: str, messages: Sequence[SmsMessage]) -> SmsSent:
        """Send up to `batch_limit` messages of one template in one call: all accepted (one
        id for the call) or none (SmsFailed)."""
        ...
