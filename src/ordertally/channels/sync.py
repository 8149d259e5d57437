"""The pull sync engine: per account, windows in UTC over the platform's update time.

- The cursor is UTC. A run re-reads `overlap_seconds` before it (late writes), then walks
  windows up to the platform's safe end (Amazon: 2 minutes behind now; Pinduoduo: 3 minutes
  behind the platform clock, windows of at most 30 minutes). Each window is converted to the
  platform's convention only at the request (ISO-8601 Z, unix seconds), never computed in a
  local time zone: the regression of the incident where a window computed in Asia/Shanghai
  against a UTC API skipped eight hours.
- The cursor moves to a window's end only after every page of that window is stored; a crash
  in the middle re-reads the window and ingest dedupes.
- A token bucket per account spaces requests; a 429 (or the platform's limit code) stops the
  run and backs off (Retry-After when given, else exponential on the error count).
- Empty streak: when `empty_streak_threshold` runs in a row read nothing while the account
  has had orders before, a non-blocking exception case `channel_empty_streak` (no order) is
  opened once, the gauge is set and a warning logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.channels import decrypt, held, ingest, repository, service
from ordertally.channels.adapters import amazon, pinduoduo, raw
from ordertally.channels.adapters.common import AdapterError, beijing_utc, text
from ordertally.channels.canonical import CanonicalOrder
from ordertally.channels.errors import (
    AccountInactive,
    InvalidAccount,
    MissingCredentials,
    PlatformUnavailable,
    RateLimited,
    SyncInProgress,
    SyncNotSupported,
)
from ordertally.channels.models import ChannelAccount
from ordertally.core import clock, outbound
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.exceptions import service as exceptions_service

log = logging.getLogger(__name__)

PULL_PLATFORMS = ("amazon", "pinduoduo")
AMAZON_WINDOW = timedelta(days=1)

SYNC_RUNS = Counter(
    "ordertally_channel_sync_runs_total",
    "Pull sync runs by account and outcome",
    ["account", "outcome"],
)
SYNC_LAG = Gauge("ordertally_channel_sync_lag_seconds", "Now minus the sync cursor", ["account"])
EMPTY_STREAK = Gauge(
    "ordertally_channel_empty_streak", "Consecutive pull runs that read no order", ["account"]
)
SYNC_ERRORS = Counter(
    "ordertally_channel_sync_errors_total",
    "Pull sync errors by account and kind",
    ["account", "kind"],
)


# --- rate limiting -----------------------------------------------------------------------------


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: int
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    async def take(self) -> None:
        """Wait until a token is free, then use it."""
        if self.tokens < 0:
            self.tokens = float(self.burst)
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


_BUCKETS: dict[str, TokenBucket] = {}
_LOCKS: dict[str, asyncio.Lock] = {}


def bucket_for(account: ChannelAccount) -> TokenBucket:
    """The account's token bucket, made anew when its rate or burst changed."""
    bucket = _BUCKETS.get(account.code)
    if bucket is None or (bucket.rate, bucket.burst) != (
        account.rate_limit_per_second,
        account.rate_limit_burst,
    ):
        bucket = _BUCKETS[account.code] = TokenBucket(
            account.rate_limit_per_second, account.rate_limit_burst
        )
    return bucket


# --- results -----------------------------------------------------------------------------------


@dataclass(slots=True)
class SyncOutcome:
    account: str
    pages: int = 0
    orders_read: int = 0
    result: ingest.IngestResult = field(default_factory=ingest.IngestResult)
    cursor_at: datetime | None = None
    complete: bool = False
    # Amazon: "restricted" (buyer PII read with a Restricted Data Token), "missing" (the
    # application lacks the PII role: no names, address lines or phones), None elsewhere.
    pii: str | None = None
    # Raw orders the adapter could not convert, held as `order_not_created` (this run's new).
    unconverted: int = 0
    # Pinduoduo: ciphertexts the configured decrypt service answered, and orders it did not.
    decrypted: int = 0
    undecrypted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "pages": self.pages,
            "orders_read": self.orders_read,
            "created": self.result.created,
            "updated": self.result.updated,
            "duplicates": self.result.duplicates,
            "held": self.result.held,
            "errors": [{"external_id": e, "message": m} for e, m in self.result.errors],
            "cursor_at": self.cursor_at,
            "complete": self.complete,
            "pii": self.pii,
            "unconverted": self.unconverted,
            "decrypted": self.decrypted,
            "undecrypted": self.undecrypted,
        }


class _Stop(Exception):
    """The run stops here (page limit); the cursor stays at the last stored window."""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _check(response: httpx.Response, platform: str) -> Any:
    if response.status_code == 429:
        raise RateLimited(f"{platform} answered 429", retry_after=_retry_after(response))
    if response.status_code >= 400:
        raise PlatformUnavailable(
            f"{platform} answered {response.status_code}: {response.text[:200]}"
        )
    try:
        return response.json()
    except ValueError as exc:
        raise PlatformUnavailable(f"{platform} answered non-JSON") from exc


# --- the engine --------------------------------------------------------------------------------


class _Run:
    def __init__(
        self, db: Database, account: ChannelAccount, http: httpx.AsyncClient, outcome: SyncOutcome
    ) -> None:
        self.db = db
        self.account = account
        self.http = http
        self.outcome = outcome
        self.bucket = bucket_for(account)
        self.credentials = service.credentials_of(account)
        self.base_url = str(account.config.get("base_url") or "")
        if not self.base_url:
            raise InvalidAccount(f"account {account.code} has no config.base_url")
        self.max_pages = get_settings().channels_sync_max_pages

    async def request(self, call: Any) -> httpx.Response:
        await self.bucket.take()
        response: httpx.Response = await call()
        return response

    def convert(
        self, external_id: str, version: str, body: dict[str, Any], unconverted: list[held.RawOrder]
    ) -> CanonicalOrder | None:
        """A raw order as a canonical one; one the adapter cannot convert joins `unconverted`
        (held by `store`, never only reported)."""
        try:
            return raw.convert(self.account.platform, body, self.account.config or {})
        except AdapterError as exc:
            unconverted.append(held.RawOrder(external_id, version, body, f"unmappable: {exc}"))
            return None

    async def store(
        self, orders: list[CanonicalOrder], unconverted: list[held.RawOrder] | None = None
    ) -> None:
        self.outcome.pages += 1
        self.outcome.orders_read += len(orders) + len(unconverted or [])
        if orders:
            self.outcome.result.add(
                await ingest.ingest_orders(self.db, self.account.code, orders, via="pull")
            )
        if unconverted:
            async with self.db.transaction() as session:
                self.outcome.unconverted += await held.hold_raw(
                    session, self.account, "pull", unconverted
                )
            self.outcome.result.errors.extend((u.external_id, u.message) for u in unconverted)
            for u in unconverted:
                log.warning(
                    "%s: order %r not converted: %s", self.account.code, u.external_id, u.message
                )
        if self.outcome.pages >= self.max_pages:
            raise _Stop

    async def advance(self, to: datetime) -> None:
        """Move the cursor forward (never back) once a window is stored."""
        async with self.db.transaction() as session:
            state = await service.sync_state(session, self.account.id)
            current = clock.as_utc(state.cursor_at) if state.cursor_at else None
            if current is None or to > current:
                state.cursor_at = to
            state.updated_at = clock.now()
        self.outcome.cursor_at = to

    # Amazon ------------------------------------------------------------------------------------

    async def pull_amazon(self, start: datetime) -> None:
        marketplace = str(self.account.config.get("marketplace_id") or "")
        refresh = self.credentials.get("refresh_token")
        secret = self.credentials.get("client_secret")
        client_id = str(self.account.config.get("client_id") or "")
        fixed = self.credentials.get("access_token")
        if refresh and secret and client_id and marketplace:
            lwa = amazon.LwaCredentials(
                str(self.account.config.get("lwa_url") or amazon.LWA_TOKEN_URL),
                client_id,
                secret,
                refresh,
            )
            client = amazon.AmazonClient(self.http, self.base_url, lwa=lwa)
            try:
                client.rdt = await client.restricted_data_token()
            except amazon.LwaError:
                raise  # the credentials' error, answered as such by sync_account
            except AdapterError as exc:
                raise PlatformUnavailable(f"amazon: {exc}", account=self.account.code) from exc
            self.outcome.pii = "restricted" if client.rdt else "missing"
        elif fixed and marketplace:
            client = amazon.AmazonClient(self.http, self.base_url, fixed)
        else:
            # A refresh token is never sent as an access token: it must go through LWA.
            raise MissingCredentials(
                f"account {self.account.code} needs config.marketplace_id and either a "
                "refresh_token, client_secret and config.client_id (LWA) or an access_token"
            )
        end = clock.now() - amazon.MIN_LAG - timedelta(seconds=5)
        after = start
        while after < end:
            before = min(after + AMAZON_WINDOW, end)
            next_token: str | None = None
            while True:
                doc = _check(
                    await self.request(
                        lambda nt=next_token, a=after, b=before: client.get_orders(
                            marketplace, a, b, page_size=self.account.page_size, next_token=nt
                        )
                    ),
                    "amazon",
                )
                payload = doc.get("payload") or {}
                orders: list[CanonicalOrder] = []
                unconverted: list[held.RawOrder] = []
                for doc_order in payload.get("Orders") or []:
                    shaped = isinstance(doc_order, dict)
                    order_id = text(doc_order.get("AmazonOrderId")) if shaped else ""
                    items = await self._amazon_items(client, order_id) if order_id else []
                    version = text(doc_order.get("LastUpdateDate")) if shaped else ""
                    body = raw.body_of("amazon", doc_order, items)
                    converted = self.convert(order_id, version, body, unconverted)
                    if converted is not None:
                        orders.append(converted)
                await self.store(orders, unconverted)
                next_token = payload.get("NextToken")
                if not next_token:
                    break
            await self.advance(before)
            after = before

    async def _amazon_items(
        self, client: amazon.AmazonClient, order_id: str
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        next_token: str | None = None
        while True:
            doc = _check(
                await self.request(lambda nt=next_token: client.get_order_items(order_id, nt)),
                "amazon",
            )
            payload = doc.get("payload") or {}
            items.extend(payload.get("OrderItems") or [])
            next_token = payload.get("NextToken")
            if not next_token:
                return items

    # Pinduoduo ---------------------------------------------------------------------------------

    async def pull_pinduoduo(self, start: datetime) -> None:
        client_id = str(self.account.config.get("client_id") or "")
        secret = self.credentials.get("client_secret")
        access = self.credentials.get("access_token") or ""
        if not client_id or not secret:
            raise MissingCredentials(
                f"account {self.account.code} needs config.client_id and a client_secret"
            )
        client = pinduoduo.PinduoduoClient(self.http, self.base_url, client_id, secret, access)
        decrypter = decrypt.client_for(self.account, self.http)
        platform_now = await self._pdd_time(client)
        end = platform_now - pinduoduo.MIN_LAG - timedelta(seconds=5)
        after = start
        size = min(self.account.page_size, pinduoduo.MAX_PAGE_SIZE)
        while after < end:
            before = min(after + pinduoduo.MAX_WINDOW, end)
            first = await self._pdd_page(client, after, before, 1, size)
            total = int(first.get("total_count") or 0)
            last = max(math.ceil(total / size), 1)
            # From the last page backwards: an order updated meanwhile leaves the window's
            # end, so earlier pages do not shift under us.
            for page in range(last, 0, -1):
                doc = (
                    first
                    if page == 1 and last == 1
                    else await self._pdd_page(client, after, before, page, size)
                )
                orders: list[CanonicalOrder] = []
                unconverted: list[held.RawOrder] = []
                for doc_order in doc.get("order_sn_list") or []:
                    shaped = isinstance(doc_order, dict)
                    converted = self.convert(
                        text(doc_order.get("order_sn")) if shaped else "",
                        text(doc_order.get("updated_at")) if shaped else "",
                        raw.body_of("pinduoduo", doc_order),
                        unconverted,
                    )
                    if converted is not None:
                        orders.append(converted)
                if decrypter is not None:
                    orders = await self._pdd_decrypt(decrypter, orders)
                await self.store(orders, unconverted)
            await self.advance(before)
            after = before

    async def _pdd_decrypt(
        self, client: pinduoduo.PinduoduoClient, orders: list[CanonicalOrder]
    ) -> list[CanonicalOrder]:
        """Ask the decrypt service for every ciphertext of these orders (no transaction is open:
        the page is not stored yet); an order not fully answered is created held."""
        result, answered, missed = await decrypt.decrypt_orders(client, orders, self.request)
        self.outcome.decrypted += answered
        self.outcome.undecrypted += missed
        return result

    async def _pdd_time(self, client: pinduoduo.PinduoduoClient) -> datetime:
        doc = _check(await self.request(lambda: client.call(pinduoduo.TIME_API, {})), "pinduoduo")
        self._pdd_error(doc)
        value = (doc.get("time_get_response") or {}).get("time")
        if not value:
            raise PlatformUnavailable("pinduoduo time answer has no time")
        return beijing_utc(value)

    async def _pdd_page(
        self,
        client: pinduoduo.PinduoduoClient,
        after: datetime,
        before: datetime,
        page: int,
        size: int,
    ) -> dict[str, Any]:
        doc = _check(
            await self.request(lambda: client.increment(after, before, page=page, page_size=size)),
            "pinduoduo",
        )
        self._pdd_error(doc)
        body: dict[str, Any] = doc.get("order_sn_increment_get_response") or {}
        return body

    @staticmethod
    def _pdd_error(doc: dict[str, Any]) -> None:
        error = doc.get("error_response")
        if error:
            code = int(error.get("error_code") or 0)
            message = f"pinduoduo error {code}: {error.get('error_msg')}"
            if code in pinduoduo.RATE_LIMIT_CODES:
                raise RateLimited(message)
            raise PlatformUnavailable(message)


async def sync_account(
    db: Database, code: str, *, http: httpx.AsyncClient | None = None
) -> SyncOutcome:
    """Pull one account now: from its cursor (minus the overlap) to the platform's safe end."""
    lock = _LOCKS.setdefault(code, asyncio.Lock())
    if lock.locked():
        raise SyncInProgress(f"a sync of {code} is running", account=code)
    async with lock:
        async with db.transaction(write=False) as session:
            account = await service.get_account(session, code)
            state = await service.sync_state(session, account.id)
            cursor = clock.as_utc(state.cursor_at) if state.cursor_at else clock.now()
        if account.platform not in PULL_PLATFORMS:
            raise SyncNotSupported(f"{account.platform} has no pull sync", account=code)
        if not account.active:
            raise AccountInactive(f"account {code} is not active", account=code)
        outcome = SyncOutcome(code, cursor_at=cursor)
        start = cursor - timedelta(seconds=account.overlap_seconds)
        client = http or outbound.client(
            "channels", timeout=get_settings().channels_http_timeout_seconds
        )
        error: Exception | None = None
        try:
            run = _Run(db, account, client, outcome)
            if account.platform == "amazon":
                await run.pull_amazon(start)
            else:
                await run.pull_pinduoduo(start)
            outcome.complete = True
        except _Stop:
            outcome.complete = False
        except (PlatformUnavailable, MissingCredentials, InvalidAccount) as exc:
            error = exc
        except httpx.HTTPError as exc:
            error = PlatformUnavailable(
                f"{account.platform} unreachable: {exc or type(exc).__name__}", account=code
            )
        except amazon.LwaError as exc:
            error = MissingCredentials(f"account {code}: {exc}", account=code)
        await _record(db, account, outcome, error)
        if error is not None:
            raise error
        return outcome


async def _record(
    db: Database, account: ChannelAccount, outcome: SyncOutcome, error: Exception | None
) -> None:
    """Write the run's result to the account's sync state (and the alert, when due)."""
    now = clock.now()
    async with db.transaction() as session:
        state = await service.sync_state(session, account.id)
        state.last_attempt_at = now
        state.updated_at = now
        if error is not None:
            state.error_count += 1
            state.last_error = str(error)[:2000]
            wait = getattr(error, "extra", {}).get("retry_after")
            if wait is None:
                wait = min(account.sync_interval_seconds * 2 ** min(state.error_count, 10), 3600)
            state.backoff_until = now + timedelta(seconds=float(wait))
            kind = "rate_limited" if isinstance(error, RateLimited) else "error"
            SYNC_ERRORS.labels(account.code, kind).inc()
            SYNC_RUNS.labels(account.code, kind).inc()
            log.warning("sync of %s failed: %s", account.code, error)
        else:
            state.error_count = 0
            state.last_error = None
            state.backoff_until = None
            state.last_success_at = now
            state.orders_seen += outcome.orders_read
            if outcome.orders_read:
                state.empty_streak = 0
                state.last_order_seen_at = now
            elif outcome.complete:
                state.empty_streak += 1
                if state.empty_streak == account.empty_streak_threshold and state.orders_seen > 0:
                    await exceptions_service.open_case(
                        session,
                        order_id=None,
                        category="channel",
                        type="channel_empty_streak",
                        blocking=False,
                        detail={
                            "account": account.code,
                            "empty_pulls": state.empty_streak,
                            "last_order_seen_at": state.last_order_seen_at.isoformat()
                            if state.last_order_seen_at
                            else None,
                            "message": "连续多次拉取无订单，请检查授权或平台状态 / "
                            "consecutive pulls returned no orders; check the credentials",
                        },
                    )
                    log.warning(
                        "account %s: %d empty pulls in a row", account.code, state.empty_streak
                    )
            SYNC_RUNS.labels(account.code, "ok" if outcome.complete else "partial").inc()
        cursor = clock.as_utc(state.cursor_at) if state.cursor_at else None
        state.lag_seconds = (now - cursor).total_seconds() if cursor else None
        EMPTY_STREAK.labels(account.code).set(state.empty_streak)
        if state.lag_seconds is not None:
            SYNC_LAG.labels(account.code).set(state.lag_seconds)


async def due_accounts(session: AsyncSession, now: datetime) -> list[str]:
    """Active pull accounts whose interval has passed and who are not backing off."""
    due: list[str] = []
    for account, state in await repository.active_accounts_with_state(session, PULL_PLATFORMS):
        if state.backoff_until is not None and clock.as_utc(state.backoff_until) > now:
            continue
        last = clock.as_utc(state.last_attempt_at) if state.last_attempt_at else None
        if last is None or last + timedelta(seconds=account.sync_interval_seconds) <= now:
            due.append(account.code)
    return due


def utc_window_repr(start: datetime, end: datetime) -> str:
    """For logs: a window in UTC, never in a local zone."""
    return f"[{start.astimezone(UTC).isoformat()}, {end.astimezone(UTC).isoformat()})"
