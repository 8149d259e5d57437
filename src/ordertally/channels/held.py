"""Held platform orders from channel pulls and file imports (issue 15).

A platform order a pull or an import cannot create (invalid, unknown currency, a rate
missing...) is kept like a failed webhook: a row of the webhook inbox (`channel_webhook`) whose
topic is `held:<via>` and whose body is the canonical order as JSON, sealed like every inbox
body, with an `order_not_created` case naming the cause. `ordertally channels replay` (and
`POST /api/v1/channels/held-orders/replay`) applies it again once the cause is fixed, the same
way as a held webhook, and resolves its case.

A raw platform order a pull cannot even convert (a bad field, an unknown shape) is kept the
same way as the platform sent it: topic `held-raw:<via>`, body `{"platform", "order",
"items"}` as JSON. A replay converts it again with the adapter of the day and the account's
configuration, so a fixed adapter or a completed configuration applies it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.channels import repository
from ordertally.channels.canonical import (
    CanonicalAddress,
    CanonicalLine,
    CanonicalOrder,
    PlatformStatus,
)
from ordertally.core import clock
from ordertally.core.crypto import body_context, seal_body
from ordertally.exceptions import service as exceptions_service

TABLE = "channel_webhook"
TOPIC_PREFIX = "held:"
RAW_PREFIX = "held-raw:"

HELD = Counter(
    "ordertally_channel_orders_held_total",
    "Platform orders stored but not created (an order_not_created case), by platform and cause",
    ["platform", "cause"],
)
REPLAYED = Counter(
    "ordertally_channel_orders_replayed_total",
    "Held platform orders replayed, by platform and outcome (applied, failed)",
    ["platform", "outcome"],
)


def to_json(order: CanonicalOrder) -> str:
    """The canonical order as JSON (datetimes in ISO 8601, the platform's raw document kept)."""
    return orjson.dumps(dataclasses.asdict(order), default=str).decode()


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def from_json(text: str) -> CanonicalOrder:
    """The canonical order `to_json` wrote."""
    doc = orjson.loads(text)
    placed_at = _when(doc["placed_at"])
    updated_at = _when(doc["updated_at"])
    assert placed_at is not None and updated_at is not None
    return CanonicalOrder(
        **{
            **doc,
            "status": PlatformStatus(doc["status"]),
            "lines": tuple(CanonicalLine(**line) for line in doc["lines"]),
            "address": CanonicalAddress(**doc["address"]),
            "placed_at": placed_at,
            "updated_at": updated_at,
            "paid_at": _when(doc.get("paid_at")),
        }
    )


def held_id(via: str, order: CanonicalOrder) -> str:
    """The inbox id of a held order: one row per platform version of the order."""
    version = hashlib.sha256(f"{order.external_id}|{order.updated_at.isoformat()}".encode())
    return f"{TOPIC_PREFIX}{via}:{version.hexdigest()[:40]}"


def cause_of(message: str) -> str:
    """A short cause for the case and the metric, from the refusal's message."""
    lowered = message.lower()
    if "currency" in lowered:
        return "unknown_currency"
    if "rate" in lowered:
        return "fx_rate_missing"
    return "invalid"


@dataclass(frozen=True, slots=True)
class RawOrder:
    """A raw platform order a pull could not convert, with why."""

    external_id: str
    version: str  # the platform's update stamp as sent ("" when it has none)
    body: dict[str, Any]  # {"platform", "order", "items"}
    message: str


def raw_id(via: str, raw: RawOrder) -> str:
    """The inbox id of a raw held order: one row per platform version (by its update stamp, or
    by its content when it has none)."""
    if raw.external_id and raw.version:
        key = f"{raw.external_id}|{raw.version}"
    else:
        key = orjson.dumps(raw.body, option=orjson.OPT_SORT_KEYS, default=str).decode()
    return f"{RAW_PREFIX}{via}:{hashlib.sha256(key.encode()).hexdigest()[:40]}"


async def _keep(
    session: AsyncSession,
    account: Any,
    *,
    via: str,
    webhook_id: str,
    topic: str,
    body: str,
    external_id: str,
    message: str,
    cause: str,
) -> bool:
    """Store one held order sealed with its case; False when this version is held already."""
    receipt_id = await repository.store_webhook(
        session,
        {
            "account_id": account.id,
            "webhook_id": webhook_id,
            "topic": topic,
            "body": seal_body(body, body_context(TABLE, str(account.id), webhook_id)),
            "status": "failed",
            "attempts": 1,
            "last_error": message[:2000],
            "received_at": clock.now(),
        },
    )
    if receipt_id is None:
        return False
    HELD.labels(account.platform, cause).inc()
    case_id = await exceptions_service.open_case(
        session,
        order_id=None,
        category="channel",
        type="order_not_created",
        blocking=True,
        detail={
            "account": account.code,
            "platform": account.platform,
            "via": via,
            "receipt_id": receipt_id,
            "webhook_id": webhook_id,
            "external_id": external_id,
            "cause": cause,
            "error": message,
            "replay": "ordertally channels replay",
        },
    )
    await repository.set_webhook_case(session, receipt_id, case_id)
    return True


async def hold_raw(session: AsyncSession, account: Any, via: str, raws: list[RawOrder]) -> int:
    """Keep each raw order a pull could not convert (cause `unmappable`) with its
    `order_not_created` case, once per platform version. Returns how many were held."""
    held = 0
    for raw in raws:
        body = orjson.dumps(raw.body, default=str).decode()
        held += await _keep(
            session,
            account,
            via=via,
            webhook_id=raw_id(via, raw),
            topic=f"{RAW_PREFIX}{via}",
            body=body,
            external_id=raw.external_id,
            message=raw.message,
            cause="unmappable",
        )
    return held


async def hold_failed(
    session: AsyncSession,
    account: Any,
    via: str,
    failed: list[tuple[CanonicalOrder, str]],
) -> int:
    """Keep each failed order of a pull or an import with its `order_not_created` case; an
    order already held in this version is not held twice. Returns how many were held."""
    held = 0
    for order, message in failed:
        held += await _keep(
            session,
            account,
            via=via,
            webhook_id=held_id(via, order),
            topic=f"{TOPIC_PREFIX}{via}",
            body=to_json(order),
            external_id=order.external_id,
            message=message,
            cause=cause_of(message),
        )
    return held
