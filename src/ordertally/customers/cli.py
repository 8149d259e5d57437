"""Commands of the customers domain, added to the `ordertally` command line."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this domain's commands to the main command line."""
