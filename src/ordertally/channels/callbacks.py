"""Channel callbacks (platform webhooks): verify, store raw in the channel inbox (one short
transaction), answer.

Nothing is applied in the request: the inbox row and its `ChannelWebhookReceived` event are
committed together, then the platform gets its 200; the worker's consumer maps the stored body
and ingests it (ADR 0019). A webhook id seen before is acknowledged again and not stored twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.channels import ingest, repository, service
from ordertally.channels.adapters import shopify
from ordertally.channels.adapters.common import AdapterError
from ordertally.channels.errors import (
    AccountNotFound,
    WebhookInvalid,
    WebhookUnauthenticated,
)
from ordertally.channels.events import ChannelWebhookReceived
from ordertally.channels.models import ChannelAccount
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.errors import PayloadTooLarge
from ordertally.core.settings import get_settings
from ordertally.events import outbox

log = logging.getLogger(__name__)

router = APIRouter(tags=["callbacks"])

WEBHOOKS = Counter(
    "ordertally_channel_webhooks_total",
    "Channel webhooks received, by platform and outcome",
    ["platform", "outcome"],
)
WEBHOOK_ACK_SECONDS = Histogram(
    "ordertally_channel_webhook_ack_seconds", "Time to acknowledge a channel webhook", ["platform"]
)


async def store_webhook(
    session: AsyncSession, account: ChannelAccount, webhook_id: str, topic: str, body: bytes
) -> int | None:
    """Insert the receipt and its event; None when this webhook id was stored before."""
    receipt_id = await repository.store_webhook(
        session,
        {
            "account_id": account.id,
            "webhook_id": webhook_id,
            "topic": topic,
            "body": body.decode("utf-8"),
            "status": "pending",
            "attempts": 0,
            "received_at": clock.now(),
        },
    )
    if receipt_id is None:
        return None
    await outbox.publish(
        session,
        "ChannelWebhookReceived",
        ChannelWebhookReceived(receipt_id=receipt_id, account=account.code, topic=topic),
        aggregate_type="channel_webhook",
        aggregate_id=f"{account.code}:{webhook_id}",
    )
    return receipt_id


def _ok(status: str) -> Response:
    return Response(orjson.dumps({"status": status}), media_type="application/json")


@router.post(
    "/callbacks/channels/shopify/{account}",
    summary="Shopify order webhooks (orders/create, orders/updated, orders/cancelled)",
    responses={
        401: {"description": "HMAC does not match"},
        404: {"description": "Unknown account"},
    },
)
async def shopify_webhook(request: Request, account: str) -> Response:
    """Verify X-Shopify-Hmac-Sha256 over the raw body, dedupe by X-Shopify-Webhook-Id, store,
    answer 200. The order is applied by the worker."""
    started = time.perf_counter()
    db: Database = request.app.state.db
    body = await request.body()
    if len(body) > get_settings().channels_webhook_max_bytes:
        WEBHOOKS.labels("shopify", "too_large").inc()
        raise PayloadTooLarge("webhook body too large")
    async with db.transaction(write=False) as session:
        found = await service.get_account_or_none(session, account)
    if found is None or found.platform != "shopify":
        WEBHOOKS.labels("shopify", "unknown_account").inc()
        raise AccountNotFound(f"no Shopify account {account!r}", account=account)
    secret = service.credentials_of(found).get("webhook_secret")
    if not secret or not shopify.verify(secret, body, request.headers.get("x-shopify-hmac-sha256")):
        WEBHOOKS.labels("shopify", "bad_signature").inc()
        raise WebhookUnauthenticated("X-Shopify-Hmac-Sha256 does not match the body")
    topic = request.headers.get("x-shopify-topic", "")
    if topic not in shopify.TOPICS:
        # A topic we do not use: acknowledge, or Shopify would retry it for hours.
        WEBHOOKS.labels("shopify", "ignored").inc()
        return _ok("ignored")
    webhook_id = request.headers.get("x-shopify-webhook-id") or (
        "sha256:" + hashlib.sha256(body).hexdigest()
    )
    try:
        orjson.loads(body)
        body.decode("utf-8")
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        WEBHOOKS.labels("shopify", "malformed").inc()
        raise WebhookInvalid("the body is not JSON") from exc
    async with db.transaction() as session:
        receipt = await store_webhook(session, found, webhook_id[:128], topic, body)
    outcome = "accepted" if receipt is not None else "duplicate"
    WEBHOOKS.labels("shopify", outcome).inc()
    WEBHOOK_ACK_SECONDS.labels("shopify").observe(time.perf_counter() - started)
    return _ok(outcome)


# --- applying stored webhooks (the worker) -----------------------------------------------------


def _to_canonical(platform: str, body: str) -> Any:
    if platform == "shopify":
        return shopify.to_canonical(orjson.loads(body))
    raise AdapterError(f"no webhook adapter for {platform}")


async def apply_receipt(session: AsyncSession, receipt_id: int) -> str:
    """Map and ingest one stored webhook inside the caller's transaction; returns its status.
    A receipt already applied is a no-op; a body that cannot be mapped is marked failed (kept
    for inspection) rather than retried forever."""
    receipt = await repository.webhook(session, receipt_id)
    if receipt is None or receipt.status != "pending":
        return receipt.status if receipt is not None else "missing"
    account = await repository.account_by_id(session, receipt.account_id)
    assert account is not None
    ref = ingest.AccountRef(account.id, account.code, account.platform)
    status, error = "applied", None
    try:
        order = _to_canonical(account.platform, receipt.body)
    except (AdapterError, ValueError, KeyError, TypeError) as exc:
        status, error = "failed", f"unmappable: {exc}"
    else:
        mappings = await ingest.load_sku_mappings(session, ref)
        result = await ingest.ingest_chunk(
            session, ref, [order], "webhook", mappings, get_settings()
        )
        ingest.count(ref, "webhook", result)
        if result.errors:
            status, error = "failed", result.errors[0][1]
    await repository.finish_webhook(session, receipt_id, status, error, clock.now())
    if status == "failed":
        log.warning("webhook %s of %s not applied: %s", receipt.webhook_id, account.code, error)
    return status


async def pending_receipts(
    session: AsyncSession, limit: int, *, older_than: datetime | None = None
) -> list[int]:
    """Receipts not applied yet, oldest first."""
    return await repository.pending_webhooks(session, limit, older_than)
