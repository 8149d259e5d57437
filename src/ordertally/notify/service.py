"""Use cases of the notify domain: plan one message per (event, target) in the dispatcher's
transaction, send what is due, retry with backoff, give up as dead, requeue, test a target.

Sending claims and leases due rows in a short transaction (FOR UPDATE SKIP LOCKED on
PostgreSQL; SQLite has one writer), sends them concurrently with no transaction open and records
every outcome in another, so a row marked sent is never claimed again. The one gap — a channel
accepted a message and the process died before the record — is described in
docs/adr/0018-notifications.md.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import apprise
import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock, ids, outbound, phones
from ordertally.core.crypto import get_cipher
from ordertally.core.db import Database, count_after_commit, dialect_of
from ordertally.core.settings import Settings, get_settings
from ordertally.events.registry import Envelope
from ordertally.notify import cards, repository, targets, templates, webhook
from ordertally.notify.errors import (
    NotificationNotDead,
    NotificationNotFound,
    TargetNotFound,
    TestPhoneRequired,
)
from ordertally.notify.metrics import DEAD, PLANNED, SEND_SECONDS, SENDS
from ordertally.notify.models import Notification
from ordertally.notify.sms import SmsFailed, SmsGateway, SmsMessage
from ordertally.notify.sms.aliyun import AliyunConfig, AliyunSms
from ordertally.orders import service as orders_service
from ordertally.orders.service import PII_PHONE

log = logging.getLogger(__name__)

# JSON webhooks get this header, so a receiver can drop the rare resend (see the ADR).
ID_HEADER = "X-Ordertally-Notification-Id"
MAX_ERROR = 500


@dataclass(slots=True)
class SendResult:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    # Rows not attempted because their target was unreachable earlier in the same round.
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    message_id: str | None = None
    error: str | None = None
    retryable: bool = True
    # False when the round skipped the row (its target was unreachable): no attempt is counted.
    attempted: bool = True
    # The channel was not reached in time (connect or read timeout, connection refused).
    unreachable: bool = False


@dataclass(slots=True)
class _Job:
    row: Notification
    phone: str | None = None  # decrypted for this send only, never stored
    outcome: Outcome | None = field(default=None)


# --- planning (outbox consumer) -----------------------------------------------------------------


async def plan(session: AsyncSession, envelope: Envelope, settings: Settings | None = None) -> int:
    """Write one pending message per configured target that wants this event; an event seen
    before writes nothing new. Returns how many rows were added."""
    return await plan_many(session, [envelope], settings)


async def plan_many(
    session: AsyncSession, envelopes: list[Envelope], settings: Settings | None = None
) -> int:
    """`plan` for a worker batch's events: the targets read once, the orders an SMS names read
    in one statement, every message written by one INSERT. Returns how many rows were added."""
    settings = settings or get_settings()
    wanted = [e for e in envelopes if e.type in templates.EVENTS]
    if not wanted:
        return 0
    ops = targets.ops_targets(settings)
    sms = targets.sms_target(settings)
    texted = [e for e in wanted if sms is not None and sms.wants(e.type)]
    phones_of = await _masked_phones(session, [str(e.payload["order_no"]) for e in texted])
    now = clock.now()
    rows: list[dict[str, Any]] = []
    for envelope in wanted:
        payload = envelope.payload
        order_no = str(payload["order_no"])
        for target in ops:
            if not target.wants(envelope.type):
                continue
            rendered = templates.render_ops(envelope.type, payload, target.lang, settings.timezone)
            rows.append(
                _row(envelope, order_no, target.kind, target.key, None, target.lang, now)
                | {"title": rendered.title[:200], "body": rendered.body}
            )
        if sms is not None and sms.wants(envelope.type):
            preview, params = templates.render_sms(
                envelope.type, payload, sms.lang, settings.timezone
            )
            rows.append(
                _row(envelope, order_no, "sms", sms.key, phones_of[order_no], sms.lang, now)
                | {
                    "title": preview[:200],
                    "body": preview,
                    "sms": {
                        "template_code": sms.template_codes[envelope.type],
                        "template_param": params,
                    },
                }
            )
    added = await repository.add_planned(session, rows)
    for row in rows:
        PLANNED.labels(row["event_type"], row["target_kind"]).inc()
    return added


async def _masked_phones(session: AsyncSession, order_nos: list[str]) -> dict[str, str]:
    """The masked phone of each order an SMS is planned for (OrderNotFound for a missing one)."""
    if not order_nos:
        return {}
    found = {
        o.order_no: o.customer_phone_masked
        for o in await orders_service.get_orders(session, sorted(set(order_nos)))
    }
    for order_no in order_nos:
        if order_no not in found:
            await orders_service.get_order(session, order_no)  # raises OrderNotFound
    return found


def _row(
    envelope: Envelope,
    order_no: str | None,
    kind: str,
    key: str,
    recipient: str | None,
    lang: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "event_id": envelope.id,
        "event_type": envelope.type,
        "order_no": order_no,
        "target_kind": kind,
        "target_key": key,
        "recipient_masked": recipient,
        "lang": lang,
        "sms": None,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": None,
        "provider_message_id": None,
        "created_at": now,
        "sent_at": None,
    }


# --- sending ------------------------------------------------------------------------------------


def backoff(settings: Settings, attempts: int) -> timedelta:
    """Exponential backoff after the n-th failed attempt, capped."""
    seconds = settings.notify_backoff_base_seconds * (2 ** (attempts - 1))
    return timedelta(seconds=min(seconds, settings.notify_backoff_max_seconds))


def sms_gateway(settings: Settings) -> SmsGateway | None:
    """The configured SMS gateway, or None."""
    if settings.notify_sms_provider == "aliyun":
        config = AliyunConfig.from_settings(settings)
        if config is not None:
            return AliyunSms(config)
    return None


async def send_due(
    db: Database, now: datetime | None = None, settings: Settings | None = None
) -> SendResult:
    """Send one batch of due messages (one round of the sender loop; tests and the CLI call it
    too) without holding a transaction while the channels answer: claim and lease the rows in
    one short transaction, send them concurrently within bounds, then record every outcome in
    one write."""
    settings = settings or get_settings()
    now = now or clock.now()
    async with db.transaction() as session:
        jobs = await _claim(session, now, settings)
    result = SendResult(claimed=len(jobs))
    if not jobs:
        return result
    await _send_jobs(jobs, settings)
    async with db.transaction() as session:
        await _record_all(session, settings, jobs, result)
    return result


async def any_due(db: Database, now: datetime | None = None) -> bool:
    """Whether a message is due (a read: an idle sender polls with it, not with a claim; on
    PostgreSQL one statement on its own, without the BEGIN and COMMIT round trips)."""
    async with db.reads() as session:
        return await repository.any_due(session, now or clock.now())


def _lease(settings: Settings) -> timedelta:
    # Longer than any send of the batch can take, so no other sender takes a row in flight.
    return timedelta(seconds=max(60.0, 3 * settings.notify_http_timeout_seconds))


async def _claim(session: AsyncSession, now: datetime, settings: Settings) -> list[_Job]:
    """Due rows, leased (their next attempt pushed past the sends) and with the buyer's phone
    decrypted for SMS rows (their orders read in one query); detached from the session."""
    rows = await repository.claim_due(
        session,
        now,
        settings.notify_send_batch,
        skip_locked=dialect_of(session) == "postgresql",
    )
    if not rows:
        return []
    await repository.lease(session, [row.id for row in rows], now + _lease(settings))
    jobs = [_Job(row) for row in rows]
    wanted = sorted({j.row.order_no for j in jobs if j.row.target_kind == "sms" and j.row.order_no})
    orders = {o.order_no: o for o in await orders_service.get_orders(session, wanted)}
    cipher = get_cipher() if orders else None
    for job in jobs:
        if job.row.target_kind == "sms" and job.row.order_no:
            try:
                order = orders.get(job.row.order_no)
                if order is None:
                    raise LookupError(f"order {job.row.order_no} does not exist")
                assert cipher is not None
                job.phone = cipher.decrypt(order.customer_phone_enc, PII_PHONE)
            except Exception as exc:  # one bad row must not block the batch forever
                job.outcome = Outcome(
                    False, error=f"no phone: {type(exc).__name__}: {exc}", retryable=False
                )
    for job in jobs:
        session.expunge(job.row)
    return jobs


# Sends in flight at once in one process, and to any one target (a channel's connections are
# bounded, and a slow channel must leave room for the others). httpcore's pool matches queued
# requests to connections in O(requests x connections): 8 per target measured 1.2-1.4 ms of CPU
# a send against 1.9-2.0 ms with 16 (bench/notify.py, docs/benchmarks.md).
SEND_CONCURRENCY = 64
TARGET_CONCURRENCY = 8


@dataclass(slots=True)
class _Round:
    """What the sends of one round share: the bounds, and the targets found unreachable (their
    rows not yet started are not attempted this round: a dead channel costs one timeout)."""

    ops: dict[str, targets.OpsTarget]
    sms: targets.SmsTarget | None
    gateway: SmsGateway | None
    limit_seconds: float
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SEND_CONCURRENCY))
    per_target: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)

    def target_slots(self, key: str) -> asyncio.Semaphore:
        found = self.per_target.get(key)
        if found is None:
            found = self.per_target[key] = asyncio.Semaphore(TARGET_CONCURRENCY)
        return found


async def _send_jobs(jobs: list[_Job], settings: Settings) -> None:
    gateway = sms_gateway(settings)
    send_round = _Round(
        ops={t.key: t for t in targets.ops_targets(settings)},
        sms=targets.sms_target(settings),
        gateway=gateway,
        limit_seconds=settings.notify_http_timeout_seconds,
    )
    batches = _sms_batches(jobs, send_round)
    batched = {id(job) for batch in batches for job in batch}
    await asyncio.gather(
        *(_bounded_batch(batch, send_round) for batch in batches),
        *(_bounded(job, send_round) for job in jobs if id(job) not in batched),
    )


def _sms_batches(jobs: list[_Job], send_round: _Round) -> list[list[_Job]]:
    """The round's SMS ready to go, by template, in batches of the gateway's batch call (two
    messages at least: a lone one goes alone); empty when the gateway has no batch call."""
    gateway, sms = send_round.gateway, send_round.sms
    if gateway is None or sms is None or gateway.batch_limit < 2:
        return []
    by_template: dict[str, list[_Job]] = {}
    for job in jobs:
        row = job.row
        if (
            job.outcome is None
            and job.phone is not None
            and row.target_kind == "sms"
            and row.target_key == sms.key
            and row.sms is not None
        ):
            by_template.setdefault(str(row.sms["template_code"]), []).append(job)
    size = gateway.batch_limit
    return [
        chunk
        for group in by_template.values()
        for chunk in (group[i : i + size] for i in range(0, len(group), size))
        if len(chunk) > 1
    ]


async def _bounded(job: _Job, send_round: _Round) -> None:
    if job.outcome is not None:
        return
    key = job.row.target_key
    # The target's slot first: rows queued behind a slow target do not hold the shared slots.
    async with send_round.target_slots(key), send_round.slots:
        if key in send_round.unreachable:
            job.outcome = Outcome(
                False, error=f"not attempted: {key} unreachable in this round", attempted=False
            )
            return
        await _deliver(
            job, send_round.ops, send_round.sms, send_round.gateway, send_round.limit_seconds
        )
        if job.outcome is not None and job.outcome.unreachable:
            send_round.unreachable.add(key)


async def _bounded_batch(batch: list[_Job], send_round: _Round) -> None:
    """Send SMS of one template in one gateway call. A business refusal (`per_message`: a
    number, a text or a rate the gateway would not take; none of the batch was taken) sends
    each message alone, so each gets its own verdict; any other failure (network, the
    gateway's own error) is every message's, as it would have been alone."""
    gateway = send_round.gateway
    assert gateway is not None
    key = batch[0].row.target_key
    alone = False
    async with send_round.target_slots(key), send_round.slots:
        if key in send_round.unreachable:
            for job in batch:
                job.outcome = Outcome(
                    False, error=f"not attempted: {key} unreachable in this round", attempted=False
                )
            return
        started = time.perf_counter()
        try:
            outcome = await _send_sms_batch(gateway, batch)
        except Exception as exc:  # the round's other sends already went out: never lose them
            log.exception("notification batch %s..: send crashed", batch[0].row.id)
            outcome = Outcome(False, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR])
        elapsed = time.perf_counter() - started
        if outcome is None:
            alone = True
        else:
            for job in batch:
                job.outcome = outcome
                SEND_SECONDS.labels("sms").observe(elapsed)
            if outcome.unreachable:
                send_round.unreachable.add(key)
    if alone:  # outside the slots: each message takes its own, as any other send
        await asyncio.gather(*(_bounded(job, send_round) for job in batch))


async def _send_sms_batch(gateway: SmsGateway, batch: list[_Job]) -> Outcome | None:
    """The batch's one outcome, or None when its messages must be sent one by one."""
    first = batch[0].row
    assert first.sms is not None
    messages = []
    for job in batch:
        assert job.row.sms is not None and job.phone is not None
        params = {str(k): str(v) for k, v in dict(job.row.sms["template_param"]).items()}
        messages.append(SmsMessage(job.phone, params, str(job.row.id)))
    try:
        sent = await gateway.send_batch(str(first.sms["template_code"]), messages)
    except SmsFailed as exc:
        if exc.per_message:
            return None
        return Outcome(
            False,
            error=f"{gateway.name} {exc}",
            retryable=exc.retryable,
            unreachable=exc.code == "network",
        )
    return Outcome(True, message_id=sent.message_id)


async def _record_all(
    session: AsyncSession, settings: Settings, jobs: list[_Job], result: SendResult
) -> None:
    finished = clock.now()
    changes: list[dict[str, Any]] = []
    for job in jobs:
        outcome = job.outcome
        assert outcome is not None
        changes.append(_outcome_values(settings, job.row, outcome, finished, result, session))
    await repository.record_many(session, changes)


async def _deliver(
    job: _Job,
    ops: dict[str, targets.OpsTarget],
    sms: targets.SmsTarget | None,
    gateway: SmsGateway | None,
    limit_seconds: float,
    *,
    header_id: str | None = None,
) -> None:
    if job.outcome is not None:
        return
    started = time.perf_counter()
    try:
        job.outcome = await _attempt(job, ops, sms, gateway, limit_seconds, header_id)
    except Exception as exc:  # the batch's other sends already went out: never lose them
        log.exception("notification %s: send crashed", job.row.id)
        job.outcome = Outcome(False, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR])
    SEND_SECONDS.labels(job.row.target_kind).observe(time.perf_counter() - started)


async def _attempt(
    job: _Job,
    ops: dict[str, targets.OpsTarget],
    sms: targets.SmsTarget | None,
    gateway: SmsGateway | None,
    limit_seconds: float,
    header_id: str | None,
) -> Outcome:
    row = job.row
    if row.target_kind == "sms":
        if sms is None or gateway is None or sms.key != row.target_key:
            return Outcome(False, error="SMS gateway no longer configured", retryable=False)
        if job.phone is None:
            return Outcome(False, error="no phone number for this message", retryable=False)
        return await _send_sms(gateway, row, job.phone)
    target = ops.get(row.target_key)
    if target is None:
        return Outcome(False, error="target no longer configured", retryable=False)
    if cards.is_card(target.kind, row.body):
        return await _send_card(target, row.body, limit_seconds)
    hook = webhook.parse(target.url)
    if hook is not None:
        answer = await webhook.send(
            hook, row.title, row.body, {ID_HEADER: header_id or str(row.id)}, limit_seconds
        )
        return Outcome(answer.ok, error=answer.error, unreachable=answer.unreachable)
    return await asyncio.to_thread(
        _send_apprise,
        _with_id_header(target.url, header_id or str(row.id)),
        row.title,
        row.body,
        limit_seconds,
    )


async def _send_sms(gateway: SmsGateway, row: Notification, phone: str) -> Outcome:
    assert row.sms is not None
    try:
        sent = await gateway.send(
            phone,
            str(row.sms["template_code"]),
            {str(k): str(v) for k, v in dict(row.sms["template_param"]).items()},
            out_id=str(row.id),
        )
    except SmsFailed as exc:
        return Outcome(
            False,
            error=f"{gateway.name} {exc}",
            retryable=exc.retryable,
            unreachable=exc.code == "network",
        )
    return Outcome(True, message_id=sent.message_id)


def _with_id_header(url: str, notification_id: str) -> str:
    scheme = url.partition("://")[0].lower()
    if scheme not in ("json", "jsons"):
        return url
    return f"{url}{'&' if '?' in url else '?'}+{ID_HEADER}={notification_id}"


# Error codes the robots answer when sending too fast (WeCom 45009 "api freq out of limit",
# DingTalk 130101 "send too fast"): worth a retry, unlike a refused card or a wrong key.
CARD_RATE_LIMITED = frozenset({45009, 130101})


async def _send_card(target: targets.OpsTarget, body: str, limit_seconds: float) -> Outcome:
    """Post a structured card's exact JSON to the robot's webhook; both platforms answer HTTP
    200 with `errcode` 0 when they took it."""
    point = cards.endpoint(target.kind, target.url, target.webhook)
    url = cards.signed_url(point, int(time.time() * 1000))
    try:
        response = await outbound.client("notify-cards").post(
            url,
            content=body.encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=limit_seconds,
        )
    except httpx.HTTPError as exc:
        return Outcome(
            False,
            error=f"{target.kind}: {type(exc).__name__}",
            unreachable=isinstance(exc, httpx.TimeoutException | httpx.ConnectError),
        )
    if response.status_code != 200:
        retry = response.status_code >= 500 or response.status_code == 429
        return Outcome(False, error=f"{target.kind}: HTTP {response.status_code}", retryable=retry)
    try:
        answer = response.json()
        code = int(answer.get("errcode", -1))
    except (ValueError, AttributeError, TypeError):
        return Outcome(False, error=f"{target.kind}: answer is not the robot's JSON")
    if code != 0:
        error = f"{target.kind}: errcode {code} {str(answer.get('errmsg', ''))[:200]}"
        return Outcome(False, error=redact(error, target.url), retryable=code in CARD_RATE_LIMITED)
    return Outcome(True)


_SECRET_PARAM = re.compile(r"(?i)\b(access_token|key|sign|secret|token|password|pass)=[^&\s]+")


def redact(text: str, url: str) -> str:
    """An error text without the target's secrets (tokens in URLs, the Apprise URL itself)."""
    text = _SECRET_PARAM.sub(r"\1=***", text)
    for part in re.split(r"[/:@?&=]+", url.partition("://")[2]):
        if len(part) >= 8:
            text = text.replace(part, "***")
    return text


def _send_apprise(url: str, title: str, body: str, timeout: float) -> Outcome:
    """Send through one Apprise URL (blocking; runs in a worker thread)."""
    sender = apprise.Apprise()
    if not sender.add(url):
        return Outcome(False, error="not a valid Apprise URL", retryable=False)
    try:
        result = sender.notify(body=body, title=title, timeout=timeout, log_level=logging.WARNING)
    except Exception as exc:  # a plugin bug must not lose the batch's other outcomes
        return Outcome(False, error=redact(f"{type(exc).__name__}: {exc}", url))
    if result:
        return Outcome(True)
    lines = " | ".join(entry.message for entry in result.logs())
    return Outcome(False, error=redact(lines, url)[-MAX_ERROR:] or "apprise: not delivered")


def _outcome_values(
    settings: Settings,
    row: Notification,
    outcome: Outcome,
    now: datetime,
    result: SendResult,
    session: AsyncSession,
) -> dict[str, Any]:
    """The row's new values after this round (every key always present: one executemany)."""
    values: dict[str, Any] = {
        "id": row.id,
        "claimed_attempts": row.attempts,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": None,
        "sent_at": None,
        "provider_message_id": None,
        "last_error": None,
    }
    if not outcome.attempted:
        # Not tried: it keeps its status and attempts and comes back after the first backoff.
        values |= {
            "next_attempt_at": now + backoff(settings, 1),
            "last_error": (outcome.error or "")[:MAX_ERROR],
        }
        result.skipped += 1
        count_after_commit(session, SENDS.labels(row.target_kind, "skipped").inc)
        return values
    attempts = row.attempts + 1
    if outcome.ok:
        values |= {
            "status": "sent",
            "attempts": attempts,
            "sent_at": now,
            "provider_message_id": (outcome.message_id or None),
        }
        result.sent += 1
        count_after_commit(session, SENDS.labels(row.target_kind, "sent").inc)
    elif outcome.retryable and attempts < settings.notify_max_attempts:
        values |= {
            "status": "failed",
            "attempts": attempts,
            "next_attempt_at": now + backoff(settings, attempts),
            "last_error": (outcome.error or "")[:MAX_ERROR],
        }
        result.retried += 1
        count_after_commit(session, SENDS.labels(row.target_kind, "retry").inc)
    else:
        values |= {
            "status": "dead",
            "attempts": attempts,
            "last_error": (outcome.error or "")[:MAX_ERROR],
        }
        result.dead += 1
        count_after_commit(session, SENDS.labels(row.target_kind, "dead").inc)
        count_after_commit(session, DEAD.labels(row.target_kind).inc)
        log.warning("notification %s to %s is dead: %s", row.id, row.target_key, outcome.error)
    return values


# --- operators ----------------------------------------------------------------------------------


async def list_notifications(
    session: AsyncSession,
    *,
    order_no: str | None = None,
    status: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[Notification]:
    """The send log, newest first."""
    return await repository.search(
        session, order_no=order_no, status=status, limit=limit, before_id=before_id
    )


async def requeue(session: AsyncSession, notification_id: int) -> Notification:
    """Give a dead message a fresh set of attempts, due now."""
    row = await repository.get(session, notification_id)
    if row is None:
        raise NotificationNotFound(f"notification {notification_id} does not exist")
    if not await repository.requeue(session, notification_id, clock.now()):
        raise NotificationNotDead(
            f"notification {notification_id} is {row.status}", status_now=row.status
        )
    found = await repository.get(session, notification_id)
    assert found is not None
    return found


async def send_test(
    db: Database,
    target_key: str,
    *,
    lang: str | None = None,
    phone: str | None = None,
    settings: Settings | None = None,
) -> Notification:
    """Send a test message to one configured target now, logged like any other."""
    settings = settings or get_settings()
    ops = {t.key: t for t in targets.ops_targets(settings)}
    sms = targets.sms_target(settings)
    now = clock.now()
    envelope = Envelope(
        id=ids.event_id(),
        type=templates.TEST_EVENT,
        version=1,
        occurred_at=now,
        aggregate_type="notify",
        aggregate_id="test",
        payload={"occurred_at": now.isoformat()},
    )
    if target_key in ops:
        target = ops[target_key]
        chosen = lang or target.lang
        rendered = templates.render_ops(envelope.type, envelope.payload, chosen, settings.timezone)
        row = _row(envelope, None, target.kind, target.key, None, chosen, now) | {
            "title": rendered.title,
            "body": rendered.body,
        }
        clear_phone = None
    elif sms is not None and target_key == sms.key:
        if not phone:
            raise TestPhoneRequired("give the phone number the test SMS should go to")
        clear_phone = phones.normalise(phone)
        chosen = lang or sms.lang
        code = settings.aliyun_sms_template_codes.get(templates.TEST_EVENT)
        if not code:
            raise TargetNotFound(
                f"no SMS template code for {templates.TEST_EVENT} in aliyun_sms_template_codes"
            )
        preview, params = templates.render_sms(
            envelope.type, envelope.payload, chosen, settings.timezone
        )
        row = _row(envelope, None, "sms", sms.key, phones.mask(clear_phone), chosen, now) | {
            "title": preview[:200],
            "body": preview,
            "sms": {"template_code": code, "template_param": params},
        }
    else:
        raise TargetNotFound(
            f"no configured target {target_key!r}", known=targets.all_keys(settings)
        )
    # Sent at once, then logged with its outcome: a test is never queued or retried.
    probe = Notification(**(row | {"id": 0}))
    job = _Job(probe, phone=clear_phone)
    await _deliver(
        job,
        ops,
        sms,
        sms_gateway(settings),
        settings.notify_http_timeout_seconds,
        header_id=f"test-{envelope.id}",
    )
    outcome = job.outcome
    assert outcome is not None
    done = clock.now()
    row |= {
        "status": "sent" if outcome.ok else "dead",
        "attempts": 1,
        "next_attempt_at": None,
        "sent_at": done if outcome.ok else None,
        "provider_message_id": outcome.message_id or None,
        "last_error": None if outcome.ok else (outcome.error or "")[:MAX_ERROR],
    }
    async with db.transaction() as session:
        await repository.add_planned(session, [row])
        count_after_commit(session, SENDS.labels(row["target_kind"], row["status"]).inc)
        found = await repository.by_event(session, envelope.id)
    assert found is not None
    return found


# --- messages other domains compose (the exception workbench) ----------------------------------

# Event types of exception cases an operations target can ask for (`events` in its entry).
CASE_EVENTS = templates.CASE_EVENTS
# The facts of a case card (order, type, age, owner, link) the workbench hands to plan one.
CaseFacts = cards.CaseFacts
# A buyer SMS a batch action sends (its Aliyun template code is set under this name).
BUYER_DELAY = "BuyerDelayNotice"


def _key_id(key: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ordertally:{key}"))


async def plan_case_notice(
    session: AsyncSession,
    *,
    key: str,
    event_type: str,
    order_no: str | None,
    title: str,
    body: str,
    card: cards.CaseFacts | None = None,
    sms: bool = False,
    settings: Settings | None = None,
) -> int:
    """Plan a case message (already rendered: a markdown card) to every operations target that
    asks for `event_type`, once per `key`; WeCom and DingTalk targets get `card` as the
    platform's structured card instead. With `sms`, to the buyer too when a template is set.
    Returns how many rows were added."""
    settings = settings or get_settings()
    now = clock.now()
    event_id = _key_id(key)
    rows: list[dict[str, Any]] = []
    for target in targets.case_targets(settings, event_type):
        text = body
        if card is not None and target.kind in cards.CARD_KINDS:
            text = cards.body(target.kind, card)
        rows.append(
            _case_row(event_id, event_type, order_no, target.kind, target.key, None, now)
            | {"lang": target.lang, "title": title[:200], "body": text}
        )
    if sms and order_no:
        rows.extend(await _buyer_rows(session, event_id, event_type, order_no, {}, settings))
    return await repository.add_planned(session, rows)


async def plan_buyer_message(
    session: AsyncSession,
    *,
    key: str,
    order_no: str,
    template: str,
    params: dict[str, str],
    settings: Settings | None = None,
) -> bool:
    """Plan one SMS to an order's buyer (a batch action's message), once per `key`. False when
    no gateway or no template code for it is configured, or it was planned before."""
    settings = settings or get_settings()
    rows = await _buyer_rows(session, _key_id(key), BUYER_DELAY, order_no, params, settings)
    return bool(rows) and await repository.add_planned(session, rows) > 0


async def _buyer_rows(
    session: AsyncSession,
    event_id: str,
    event_type: str,
    order_no: str,
    params: dict[str, str],
    settings: Settings,
) -> list[dict[str, Any]]:
    sms = targets.sms_target(settings)
    code = settings.aliyun_sms_template_codes.get(event_type)
    if sms is None or not code:
        return []
    order = await orders_service.get_order(session, order_no)
    preview = templates.render_buyer_notice(event_type, params, sms.lang)
    row = _case_row(
        event_id, event_type, order_no, "sms", sms.key, order.customer_phone_masked, clock.now()
    )
    return [
        row
        | {
            "lang": sms.lang,
            "title": preview[:200],
            "body": preview,
            "sms": {"template_code": code, "template_param": params},
        }
    ]


def _case_row(
    event_id: str,
    event_type: str,
    order_no: str | None,
    kind: str,
    key: str,
    recipient: str | None,
    now: datetime,
) -> dict[str, Any]:
    envelope = Envelope(
        id=event_id,
        type=event_type,
        version=1,
        occurred_at=now,
        aggregate_type="exception_case",
        aggregate_id=event_id,
        payload={},
    )
    return _row(envelope, order_no, kind, key, recipient, "zh", now)
