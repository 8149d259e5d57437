"""The export templates: built-in ones, one small module each, registered by name.

A template is data: the table it reads (with the joins its columns need), the columns it can
write, the filters it accepts and the amount it sums per currency. Adding one is one module
here that calls `register()`, plus its import in `BUILT_IN` below.
"""

from __future__ import annotations

import importlib

from ordertally.exports.templates.base import TEMPLATES, Column, Template, register

# The modules of the built-in templates, in the order the API lists them.
BUILT_IN = (
    "orders",
    "order_lines",
    "payments",
    "shipments",
    "exception_cases",
    "reconciliations",
    "order_timelines",
    "aftersale_cases",
    "refunds",
    "aftersale_timelines",
)


def load_built_in() -> dict[str, Template]:
    """Import every built-in template module (each registers itself) and return the registry."""
    for name in BUILT_IN:
        importlib.import_module(f"ordertally.exports.templates.{name}")
    return TEMPLATES


__all__ = ["BUILT_IN", "TEMPLATES", "Column", "Template", "load_built_in", "register"]
