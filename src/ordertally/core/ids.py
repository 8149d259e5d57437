"""Identifiers: order numbers people can read out, event ids that sort by time."""

from __future__ import annotations

import os
import secrets
import time
import uuid
from datetime import datetime


def order_no(at: datetime) -> str:
    """A numeric order number: date (UTC) + 12 random digits, e.g. OT261122384920175530."""
    return f"OT{at:%y%m%d}{secrets.randbelow(10**12):012d}"


def event_id() -> str:
    """A UUIDv7-style id: time-ordered, random tail."""
    ms = int(time.time() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
