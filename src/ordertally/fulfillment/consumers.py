"""What the worker loads for this domain: its event schemas, consumers and periodic jobs."""

from __future__ import annotations

import ordertally.fulfillment.events  # noqa: F401
