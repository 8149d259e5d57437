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
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.channels import held, ingest, repository, service
from ordertally.channels.adapters import raw, shopify
from ordertally.channels.adapters.common import AdapterError
from ordertally.channels.canonical import CanonicalOrder
from ordertally.channels.errors import (
    AccountNotFound,
    WebhookInvalid,
    WebhookUnauthenticated,
)
from ordertally.channels.events import ChannelWebhookReceived
from ordertally.channels.models import ChannelAccount
from ordertally.core import clock, money
from ordertally.core.crypto import body_context, open_body, seal_body
from ordertally.core.db import Database
from ordertally.core.errors import OrdertallyError, PayloadTooLarge
from ordertally.core.settings import Settings, get_settings
from ordertally.events import outbox
from ordertally.exceptions import service as exceptions_service
from ordertally.orders import creation, fx

log = logging.getLogger(__name__)

router = APIRouter(tags=["callbacks"])
_TABLE = "channel_webhook"
# Webhook topics another domain applies (after-sales: Shopify's refunds/create), registered by
# its wiring: (session, account code = the orders' channel, decoded body) -> None when
# applied, else why not.
TopicHandler = Callable[[AsyncSession, str, dict[str, Any]], Awaitable[str | None]]
TOPIC_HANDLERS: dict[str, TopicHandler] = {}


def register_topic_handler(topic: str, handler: TopicHandler) -> None:
    """Let another domain apply the stored webhooks of a topic (once per topic)."""
    TOPIC_HANDLERS[topic] = handler


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
            "body": seal_body(
                body.decode("utf-8"), body_context(_TABLE, str(account.id), webhook_id)
            ),
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


async def purge_bodies(session: AsyncSession, now: datetime) -> int:
    """Empty the bodies of webhooks applied more than the retention period ago (the dedupe key,
    topic, status and times stay); returns how many."""
    cutoff = now - timedelta(days=get_settings().inbox_retention_days)
    return await repository.purge_webhook_bodies(session, cutoff)


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
    # One statement on its own (no BEGIN and COMMIT round trips on PostgreSQL): every webhook
    # reads its account before the signature can be checked.
    async with db.reads() as session:
        found = await service.get_account_or_none(session, account)
    if found is None or found.platform != "shopify":
        WEBHOOKS.labels("shopify", "unknown_account").inc()
        raise AccountNotFound(f"no Shopify account {account!r}", account=account)
    secret = service.credentials_of(found).get("webhook_secret")
    if not secret or not shopify.verify(secret, body, request.headers.get("x-shopify-hmac-sha256")):
        WEBHOOKS.labels("shopify", "bad_signature").inc()
        raise WebhookUnauthenticated("X-Shopify-Hmac-Sha256 does not match the body")
    topic = request.headers.get("x-shopify-topic", "")
    if topic not in shopify.TOPICS and topic not in shopify.OTHER_TOPICS:
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


HELD = held.HELD
REPLAYED = held.REPLAYED


def _cause(order: CanonicalOrder, settings: Settings, rates: dict[str, Decimal]) -> str | None:
    """Why a mapped order cannot be created for lack of configuration, if it cannot."""
    try:
        currency = money.check_currency(order.currency)
    except OrdertallyError:
        return "unknown_currency"
    try:
        creation.fx_rate(settings, currency, rates)
    except money.FxRateUnavailable:
        return "fx_rate_missing"
    return None


async def apply_receipt(session: AsyncSession, receipt_id: int, *, replay: bool = False) -> str:
    """Map and ingest one stored webhook inside the caller's transaction; returns its status.
    A receipt already applied is a no-op. One that cannot be applied (missing rate, unknown
    currency, unmappable body, invalid order) is marked failed, kept, counted and held by an
    `order_not_created` case naming the cause; `replay=True` applies a failed one again (the
    case is resolved once it is applied)."""
    receipt = await repository.webhook(session, receipt_id)
    if receipt is None:
        return "missing"
    if receipt.status != "pending" and not (replay and receipt.status == "failed"):
        return receipt.status
    account = await repository.account_by_id(session, receipt.account_id)
    assert account is not None
    handler = TOPIC_HANDLERS.get(receipt.topic)
    if handler is not None:
        body = open_body(receipt.body, body_context(_TABLE, str(account.id), receipt.webhook_id))
        error = await handler(session, account.code, orjson.loads(body))
        done = "failed" if error else "applied"
        await repository.finish_webhook(session, receipt_id, done, error, clock.now())
        return done
    settings = get_settings()
    ref = ingest.AccountRef(account.id, account.code, account.platform)
    status, error, cause, external_id = "applied", None, None, ""
    try:
        body = open_body(receipt.body, body_context(_TABLE, str(account.id), receipt.webhook_id))
        if receipt.topic.startswith(held.RAW_PREFIX):  # a pull could not convert it
            via = receipt.topic.removeprefix(held.RAW_PREFIX)
            order = raw.convert(account.platform, orjson.loads(body), account.config or {})
        elif receipt.topic.startswith(held.TOPIC_PREFIX):  # from a pull or an import
            via = receipt.topic.removeprefix(held.TOPIC_PREFIX)
            order = held.from_json(body)
        else:
            via = "webhook"
            order = _to_canonical(account.platform, body)
    except (AdapterError, *raw.UNCONVERTIBLE) as exc:  # any unknown shape: held, not retried
        unknown = isinstance(exc.__cause__, money.UnknownCurrency)
        cause = "unknown_currency" if unknown else "unmappable"
        status, error = "failed", f"{cause}: {exc}"
    else:
        external_id = order.external_id
        cause = _cause(order, settings, await fx.rates_at(session, settings, clock.now()))
        if cause is not None:
            # Nothing is written for it: the whole order waits for the configuration.
            status, error = "failed", f"{cause}: {order.currency}"
        else:
            mappings = await ingest.load_sku_mappings(session, ref)
            result = await ingest.ingest_chunk(
                session, ref, [order], via, mappings, settings, hold=False
            )
            ingest.count(ref, via, result)
            if result.errors:
                status, error, cause = "failed", result.errors[0][1], "invalid"
    await repository.finish_webhook(session, receipt_id, status, error, clock.now())
    if replay:
        REPLAYED.labels(account.platform, status).inc()
    if status == "failed":
        log.warning("webhook %s of %s not applied: %s", receipt.webhook_id, account.code, error)
        if receipt.held_case_id is None:
            HELD.labels(account.platform, cause or "invalid").inc()
            case_id = await exceptions_service.open_case(
                session,
                order_id=None,
                category="channel",
                type="order_not_created",
                blocking=True,
                detail={
                    "account": account.code,
                    "platform": account.platform,
                    "receipt_id": receipt_id,
                    "webhook_id": receipt.webhook_id,
                    "external_id": external_id,
                    "cause": cause,
                    "error": error,
                    "replay": "ordertally channels replay",
                },
            )
            await repository.set_webhook_case(session, receipt_id, case_id)
    elif receipt.held_case_id is not None:
        await exceptions_service.resolve(
            session, receipt.held_case_id, "channels.replay", "applied on replay"
        )
    return status


async def replay_failed(
    db: Database, *, account: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Apply again every failed (held) webhook, oldest first, each in its own transaction:
    what the configuration now allows is created and its case resolved; the rest stays held."""
    async with db.transaction(write=False) as session:
        account_id = None
        if account is not None:
            found = await service.get_account(session, account)
            account_id = found.id
        ids = await repository.failed_webhooks(session, limit, account_id)
    outcomes = []
    for receipt_id in ids:
        async with db.transaction() as session:
            status = await apply_receipt(session, receipt_id, replay=True)
            receipt = await repository.webhook(session, receipt_id)
            outcomes.append(
                {
                    "receipt_id": receipt_id,
                    "webhook_id": receipt.webhook_id if receipt else None,
                    "status": status,
                    "error": receipt.last_error if receipt else None,
                }
            )
    return outcomes


async def held_webhooks(session: AsyncSession, limit: int = 100) -> list[dict[str, Any]]:
    """Webhooks that could not be applied (held), oldest first, for an operator to replay."""
    return [
        {
            "receipt_id": receipt_id,
            "account": account,
            "webhook_id": webhook_id,
            "topic": topic,
            "attempts": attempts,
            "error": error,
            "received_at": received_at,
            "case_id": case_id,
        }
        for (
            receipt_id,
            account,
            webhook_id,
            topic,
            attempts,
            error,
            received_at,
            case_id,
        ) in await repository.held_webhook_rows(session, limit)
    ]


async def pending_receipts(
    session: AsyncSession, limit: int, *, older_than: datetime | None = None
) -> list[int]:
    """Receipts not applied yet, oldest first."""
    return await repository.pending_webhooks(session, limit, older_than)
