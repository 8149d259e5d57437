"""Tables of the fulfillment domain."""

from __future__ import annotations
