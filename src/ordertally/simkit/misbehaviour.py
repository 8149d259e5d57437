"""How a simulated platform misbehaves, reproducibly: one set of rates and switches for what it
sends, dice that play the same run again from the same seed, and outages scripted by count, by
time or until healed."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_RATES = ("drop_rate", "duplicate_rate", "out_of_order_rate", "forge_rate", "stale_rate")


@dataclass(frozen=True, slots=True)
class Misbehaviour:
    """What goes wrong with the messages a platform sends; each rate is a probability per
    message. Each simulator uses the knobs its platform has and shows only those."""

    drop_rate: float = 0.0  # never sent
    duplicate_rate: float = 0.0  # sent twice
    out_of_order_rate: float = 0.0  # held back and sent after the next one
    forge_rate: float = 0.0  # a copy signed with the wrong key goes too
    stale_rate: float = 0.0  # a copy with a timestamp outside the window goes too
    delay_seconds: float = 0.0  # each message waits this long before its first send
    reorder: bool = False  # hold messages for a window, then send the newest first
    reorder_window_seconds: float = 1.0
    silent: bool = False  # nothing is sent at all
    seed: int | None = None  # the dice's seed (None: not reproducible)

    def __post_init__(self) -> None:
        for name in _RATES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.delay_seconds < 0:
            raise ValueError("delay_seconds cannot be negative")
        if self.reorder_window_seconds <= 0:
            raise ValueError("reorder_window_seconds must be positive")

    def patched(self, changes: dict[str, Any]) -> Misbehaviour:
        """This misbehaviour with the given fields changed (None leaves a field, except seed)."""
        given = {k: v for k, v in changes.items() if v is not None or k == "seed"}
        return dataclasses.replace(self, **given)

    def view(self, fields: Iterable[str]) -> dict[str, Any]:
        """The named fields, in that order (what a simulator's control API shows)."""
        return {name: getattr(self, name) for name in fields}


class Dice(random.Random):
    """A seeded random source: the same seed plays the same misbehaviour (and the same
    numbers, scripts...) again. A zero rate never rolls, so it never shifts the sequence."""

    def hits(self, rate: float) -> bool:
        """True with probability `rate`."""
        return rate > 0 and self.random() < rate


@dataclass(slots=True)
class Outage:
    """Failures on command: the next `remaining` requests, every request until `until`
    (time.monotonic()) or until healed; `mode` names the failure for simulators with several."""

    mode: str | None = None
    remaining: int = 0
    until: float = 0.0
    forever: bool = False

    def fail_next(self, count: int, mode: str = "down") -> None:
        """Fail the next `count` requests (0: none)."""
        self.remaining = max(count, 0)
        if count > 0:
            self.mode = mode

    def fail_for(self, seconds: float, mode: str = "down") -> None:
        """Fail every request for `seconds` from now (0: the timed outage ends)."""
        self.until = time.monotonic() + seconds if seconds > 0 else 0.0
        if seconds > 0:
            self.mode = mode

    def fail_until_healed(self, mode: str = "down") -> None:
        """Fail every request until `heal()`."""
        self.mode, self.forever = mode, True

    def heal(self) -> None:
        """No failure any more."""
        self.mode, self.remaining, self.until, self.forever = None, 0, 0.0, False

    def take(self) -> str | None:
        """Count one request: the failure it must meet, or None to answer normally."""
        if self.remaining > 0:
            self.remaining -= 1
            return self.mode
        if self.forever or (self.until and time.monotonic() < self.until):
            return self.mode
        return None
