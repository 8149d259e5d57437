# LEAD NOTE TO THE FULFILLMENT HELPER: before anything else read /tmp/common.md (team rules: no git
# commands at all, run only tests/fulfillment, migration chain, shared-file etiquette). Delete
# these three comment lines when you write this file.
"""What the worker loads for this domain: its event schemas, consumers and periodic jobs."""

from __future__ import annotations

import ordertally.fulfillment.events  # noqa: F401
