"""Tables of the channels domain."""

from __future__ import annotations
