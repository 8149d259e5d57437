"""The domains, in the one order the app and the worker wire them, and the plugins after them.

Each domain package has a `wiring.py` whose `register(app)` wires its routes (when there is an
app), consumers, jobs, hooks and the parts it adds to other domains' documents. Nothing else
registers anything: `create_app` and `ordertally worker` both call `register_all`.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from fastapi import FastAPI

from ordertally.aftersales import wiring as aftersales
from ordertally.analytics import wiring as analytics
from ordertally.auth import wiring as auth
from ordertally.casework import wiring as casework
from ordertally.catalog import wiring as catalog
from ordertally.channels import wiring as channels
from ordertally.core.settings import Settings
from ordertally.customers import wiring as customers
from ordertally.events import relay
from ordertally.exports import wiring as exports
from ordertally.fulfillment import wiring as fulfillment
from ordertally.idempotency import wiring as idempotency
from ordertally.inventory import wiring as inventory
from ordertally.jobs import wiring as jobs
from ordertally.notify import wiring as notify
from ordertally.orders import wiring as orders
from ordertally.payments import wiring as payments
from ordertally.rules import wiring as rules
from ordertally.search import wiring as search
from ordertally.web import wiring as web


class Wiring(Protocol):
    """What a domain's (or a plugin's) wiring module offers."""

    def register(self, app: FastAPI | None) -> None:
        """Wire routes (when `app` is given), consumers, jobs, hooks and document parts."""


# Routes are mounted in this order (no two domains' paths overlap).
DOMAINS: tuple[Wiring, ...] = (
    idempotency,
    orders,
    payments,
    inventory,
    fulfillment,
    channels,
    customers,
    notify,
    analytics,
    web,
    catalog,
    auth,
    exports,
    casework,
    search,
    rules,
    aftersales,
    jobs,
)


def register_all(settings: Settings, app: FastAPI | None = None) -> None:
    """Wire every domain in order, then each module of `settings.plugin_modules` (imported;
    its `register(app)` called when it has one), then the broker relay when one is set."""
    for domain in DOMAINS:
        domain.register(app)
    for name in settings.plugin_modules:
        plugin = importlib.import_module(name)
        register = getattr(plugin, "register", None)
        if callable(register):
            register(app)
    relay.register(settings)
