"""Commands of the fulfillment domain, added to the `ordertally` command line."""

from __future__ import annotations

import typer

from ordertally.fulfillment.simulator import cli as simulator_cli


def register(app: typer.Typer) -> None:
    """Add this domain's commands to the main command line."""
    simulator_cli.register(app)
