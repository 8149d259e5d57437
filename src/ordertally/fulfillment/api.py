# LEAD NOTE TO THE FULFILLMENT HELPER: before anything else read /tmp/common.md (team rules: no git
# commands at all, run only tests/fulfillment, migration chain, shared-file etiquette). Delete
# these three comment lines when you write this file.
"""HTTP routes of the fulfillment domain."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["fulfillment"])
