"""`ordertally import`: platform order files (CSV, XLSX) into orders, with a progress bar."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the import command to the main command line."""
