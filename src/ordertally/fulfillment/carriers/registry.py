"""Which carrier adapter is on: built once per settings object from `fulfillment_carrier`."""

from __future__ import annotations

from ordertally.core.settings import Settings, get_settings
from ordertally.fulfillment.carriers.base import CarrierAdapter
from ordertally.fulfillment.carriers.kuaidi100 import kuaidi100_from_settings

# Keyed by id() and holding the settings object, so the id cannot be reused by a new one.
_built: dict[int, tuple[Settings, CarrierAdapter | None]] = {}


def current(settings: Settings | None = None) -> CarrierAdapter | None:
    """The configured adapter, or None when shipments are waybilled by hand ("manual" or the
    adapter's settings are missing)."""
    settings = settings or get_settings()
    key = id(settings)
    entry = _built.get(key)
    if entry is None or entry[0] is not settings:
        _built.clear()  # settings were rebuilt (tests, reload): drop adapters of the old ones
        adapter: CarrierAdapter | None = None
        if settings.fulfillment_carrier == "kuaidi100":
            adapter = kuaidi100_from_settings(settings)
        entry = _built[key] = (settings, adapter)
    return entry[1]


def code(settings: Settings | None = None) -> str:
    """The carrier code new shipments get: the adapter's, or "manual"."""
    adapter = current(settings)
    return adapter.code if adapter is not None else "manual"


def min_query_interval(adapter: CarrierAdapter) -> int:
    """Seconds the carrier wants between two queries of one waybill (0 = no rule)."""
    return int(getattr(adapter, "min_query_interval_seconds", 0) or 0)
