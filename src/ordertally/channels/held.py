"""Held platform orders from channel pulls and file imports (issue 15).

A platform order a pull or an import cannot create (invalid, unknown currency, a rate
missing...) is kept like a failed webhook: a row of the webhook inbox (`channel_webhook`) whose
topic is `held:<via>` and whose body is the canonical order as JSON, sealed like every inbox
body, with an `order_not_created` case naming the cause. `ordertally channels replay` (and
`POST /api/v1/channels/held-orders/replay`) applies it again once the cause is fixed, the same
way as a held webhook, and resolves its case.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
        webhook_id = held_id(via, order)
        receipt_id = await repository.store_webhook(
            session,
            {
                "account_id": account.id,
                "webhook_id": webhook_id,
                "topic": f"{TOPIC_PREFIX}{via}",
                "body": seal_body(to_json(order), body_context(TABLE, str(account.id), webhook_id)),
                "status": "failed",
                "attempts": 1,
                "last_error": message,
                "received_at": clock.now(),
            },
        )
        if receipt_id is None:
            continue
        cause = cause_of(message)
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
                "external_id": order.external_id,
                "cause": cause,
                "error": message,
                "replay": "ordertally channels replay",
            },
        )
        await repository.set_webhook_case(session, receipt_id, case_id)
        held += 1
    return held
