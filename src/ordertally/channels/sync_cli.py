"""Commands of the channel sync engine and its simulators."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the sync and simulator commands to the main command line."""
