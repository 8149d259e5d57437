"""The UTC clock every module reads; tests can freeze or move it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

_frozen: datetime | None = None
_offset = timedelta(0)


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    if _frozen is not None:
        return _frozen
    return datetime.now(UTC) + _offset


def as_utc(value: datetime) -> datetime:
    """Attach UTC to naive values read back from SQLite, convert aware ones."""
    if value.tzinfo is UTC:  # what asyncpg reads back: nothing to do
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_local(value: datetime, tz: str) -> datetime:
    """Convert a UTC timestamp to the merchant's timezone for display."""
    return as_utc(value).astimezone(ZoneInfo(tz))


@contextlib.contextmanager
def frozen(at: datetime) -> Iterator[None]:
    """Freeze the clock at a moment (tests)."""
    global _frozen
    previous = _frozen
    _frozen = as_utc(at)
    try:
        yield
    finally:
        _frozen = previous


def advance(delta: timedelta) -> None:
    """Move the clock forward (tests); works frozen or running."""
    global _frozen, _offset
    if _frozen is not None:
        _frozen = _frozen + delta
    else:
        _offset += delta


def reset() -> None:
    """Back to the real clock."""
    global _frozen, _offset
    _frozen = None
    _offset = timedelta(0)
