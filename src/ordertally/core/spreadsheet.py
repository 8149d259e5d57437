"""The one neutraliser for every cell of a CSV or XLSX file the product writes: text that a
spreadsheet would run as a formula (OWASP "CSV injection") is written with a leading `'`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# What spreadsheets read as the start of a formula or a DDE call (the ASCII signs, tab and
# carriage return, and the full-width signs some versions of Excel and WPS also accept).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "|", "%", "＝", "＋", "－", "＠")


def safe_cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text, never runs: text starting like a formula gets a
    leading `'`; numbers, dates and None pass unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def safe_row(values: Iterable[Any]) -> list[Any]:
    """`safe_cell` over a row."""
    return [safe_cell(v) for v in values]


def safe_mapping(row: Mapping[str, Any]) -> dict[str, Any]:
    """`safe_cell` over a csv.DictWriter row."""
    return {k: safe_cell(v) for k, v in row.items()}
