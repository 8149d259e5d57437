"""Commands of the channels domain, added to the `ordertally` command line."""

from __future__ import annotations

import typer

from ordertally.channels import import_cli, sync_cli


def register(app: typer.Typer) -> None:
    """Add this domain's commands to the main command line."""
    sync_cli.register(app)
    import_cli.register(app)
