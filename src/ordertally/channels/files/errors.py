"""What goes wrong reading a platform order file."""

from __future__ import annotations


class FileError(Exception):
    """The file cannot be imported at all (unreadable, not a known format, columns missing)."""


class RowError(Exception):
    """One row cannot be imported (its order is rejected with the reason)."""
