"""Raw orders of the pull platforms as canonical orders, for pulls and for replays of the
orders a pull could not convert (`held.RawOrder`)."""

from __future__ import annotations

from typing import Any

from ordertally.channels.adapters import amazon, pinduoduo
from ordertally.channels.adapters.common import AdapterError
from ordertally.channels.canonical import CanonicalOrder

# What a platform document of an unexpected shape raises inside an adapter (int("两"),
# Decimal("abc"), a list where an object was expected...), besides AdapterError itself.
UNCONVERTIBLE = (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, IndexError)


def body_of(platform: str, order: Any, items: list[Any] | None = None) -> dict[str, Any]:
    """The stored form of a raw order (and, for Amazon, its items)."""
    body: dict[str, Any] = {"platform": platform, "order": order}
    if items is not None:
        body["items"] = items
    return body


def convert(platform: str, body: dict[str, Any], config: dict[str, Any]) -> CanonicalOrder:
    """A raw order (`body_of`) with the platform's adapter and the account's configuration;
    any failure, whatever the adapter raised, is an AdapterError."""
    try:
        order = body.get("order")
        if not isinstance(order, dict):
            raise AdapterError(f"the {platform} order is not an object: {order!r:.80}")
        if platform == "pinduoduo":
            return pinduoduo.to_canonical(order)
        if platform == "amazon":
            return amazon.to_canonical(
                order,
                list(body.get("items") or []),
                fallback_currency=str(config.get("currency") or ""),
            )
    except AdapterError:
        raise
    except UNCONVERTIBLE as exc:
        raise AdapterError(f"{type(exc).__name__}: {exc}") from exc
    raise AdapterError(f"no pull adapter for {platform}")
