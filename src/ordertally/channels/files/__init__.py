"""Platform order files (CSV, XLSX) into canonical orders. Pure: no database.

`templates` (how each platform's export maps to canonical fields), `reading` (rows of a CSV or
XLSX file), `cells` (cells into amounts, quantities, UTC times, addresses), `parser` (rows into
orders and rejected rows, in file order) and `report` (the rejected rows as a CSV).
"""

from __future__ import annotations

# The names callers use as `files.X` (import_cli, tests), from the modules that hold them.
from ordertally.channels.files.cells import parse_amount, split_address, text_of
from ordertally.channels.files.errors import FileError
from ordertally.channels.files.join import join_reports
from ordertally.channels.files.parser import (
    FileParser,
    ParsedOrder,
    ParseStats,
    Rejected,
    detect_template,
    parse_file,
)
from ordertally.channels.files.reading import Cell, InMemoryFile, Source, read_rows, source_size
from ordertally.channels.files.report import report_path, safe_cell, write_report
from ordertally.channels.files.templates import (
    CUSTOM,
    TEMPLATES,
    Grouping,
    Template,
    custom_template,
    template_for,
)

__all__ = [
    "CUSTOM",
    "TEMPLATES",
    "Cell",
    "FileError",
    "FileParser",
    "Grouping",
    "InMemoryFile",
    "ParseStats",
    "ParsedOrder",
    "Rejected",
    "Source",
    "Template",
    "custom_template",
    "detect_template",
    "join_reports",
    "parse_amount",
    "parse_file",
    "read_rows",
    "report_path",
    "safe_cell",
    "source_size",
    "split_address",
    "template_for",
    "text_of",
    "write_report",
]
