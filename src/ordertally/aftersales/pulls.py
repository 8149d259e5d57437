"""Platform after-sale records pulled per channel account, by update-time window with a cursor
of its own (the order pull's rules, ADR 0019): Pinduoduo's `pdd.refund.list.increment.get`,
and the after-sale lists of Taobao, JD and Douyin (`channels.adapters.aftersale_lists`, read and
stored by `records` / `platforms.receive_listed`, each record's stage once; see the end).

- Windows of at most 30 minutes in UTC, converted to unix seconds only at the request, ending
  3 minutes behind the platform clock (`pdd.time.get`); a run re-reads the account's
  `overlap_seconds` before its cursor.
- `after_sales_status` is a required single value, so each window is read once per status we
  act on: 10 退款成功 (the platform refunded: money moved) and 14 换货补寄待商家处理 (an exchange
  or reshipment the merchant must send). A record's earlier states are not pulled: the inbox
  keeps one row per refund id, and the first version stored is the one applied.
- The platform is called with no transaction open; each page is stored in the after-sales
  inbox (`platforms.receive_pinduoduo`: sealed, deduplicated by refund id, applied) in one
  transaction, and the cursor moves to a window's end only after all its pages are stored. A
  crash re-reads the window and the inbox answers "duplicate".
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.aftersales import platforms, records, repository
from ordertally.aftersales.errors import ReportRefused
from ordertally.channels import service as channels_service
from ordertally.channels import sync as channels_sync
from ordertally.channels.adapters import aftersale_lists, pinduoduo
from ordertally.channels.adapters.common import beijing_utc
from ordertally.channels.errors import (
    AccountInactive,
    ChannelError,
    InvalidAccount,
    MissingCredentials,
    PlatformUnavailable,
    RateLimited,
    SyncInProgress,
    SyncNotSupported,
)
from ordertally.core import clock, outbound
from ordertally.core.db import Database
from ordertally.core.settings import get_settings

log = logging.getLogger(__name__)

PULL_PLATFORMS = ("pinduoduo", "taobao", "jd", "douyin")
# after_sales_status values read (POP documentation of the API): 10 退款成功, 14 换货补寄待商家处理.
PULL_STATUSES = (10, 14)

PULL_RUNS = Counter(
    "ordertally_aftersale_pull_runs_total",
    "After-sale record pull runs by account and outcome",
    ["account", "outcome"],
)

_LOCKS: dict[str, asyncio.Lock] = {}


@dataclass(slots=True)
class PullOutcome:
    account: str
    pages: int = 0
    read: int = 0
    result: platforms.IngestResult = field(default_factory=platforms.IngestResult)
    cursor_at: datetime | None = None
    complete: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "pages": self.pages,
            "read": self.read,
            "created": self.result.created,
            "duplicates": self.result.duplicates,
            "unknown_order": self.result.unknown_order,
            "advanced": self.result.advanced,
            "undecided": self.result.undecided,
            "refused": [{"refund_id": r, "message": m} for r, m in self.result.refused],
            "cursor_at": self.cursor_at,
            "complete": self.complete,
        }


class _Stop(Exception):
    """The run stops here (page limit); the cursor stays at the last stored window."""


def _json_of(platform: str, response: httpx.Response) -> Any:
    """A platform's JSON answer; 429 slows down, another HTTP error or a body that is not JSON
    is the platform unavailable."""
    if response.status_code == 429:
        raise RateLimited(f"{platform} answered 429")
    if response.status_code >= 400:
        raise PlatformUnavailable(
            f"{platform} answered {response.status_code}: {response.text[:200]}"
        )
    try:
        return response.json()
    except ValueError as exc:
        raise PlatformUnavailable(f"{platform} answered non-JSON") from exc


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The POP router's JSON answer, or the error it stands for (70031/52101 slow down)."""
    doc = _json_of("pinduoduo", response)
    if not isinstance(doc, dict):
        raise PlatformUnavailable("pinduoduo answered a non-object")
    error = doc.get("error_response")
    if error:
        code = int(error.get("error_code") or 0)
        message = f"pinduoduo error {code}: {error.get('error_msg')}"
        if code in pinduoduo.RATE_LIMIT_CODES:
            raise RateLimited(message)
        raise PlatformUnavailable(message)
    return doc


class _Run:
    """A Pinduoduo account's pull (the subclass: Taobao's, JD's, Douyin's)."""

    def __init__(self, db: Database, code: str, client: Any, outcome: PullOutcome) -> None:
        self.db = db
        self.code = code
        self.client = client
        self.outcome = outcome
        self.max_pages = get_settings().channels_sync_max_pages

    async def receive(self, session: AsyncSession, items: list[dict[str, Any]]) -> Any:
        return await platforms.receive_pinduoduo(
            session, items, f"{self.code}:pull", channel=self.code
        )

    async def call(self, bucket: channels_sync.TokenBucket, request: Any) -> dict[str, Any]:
        await bucket.take()
        return _answer(await request())

    async def pull(self, bucket: channels_sync.TokenBucket, start: datetime, size: int) -> None:
        doc = await self.call(bucket, lambda: self.client.call(pinduoduo.TIME_API, {}))
        value = (doc.get("time_get_response") or {}).get("time")
        if not value:
            raise PlatformUnavailable("pinduoduo time answer has no time")
        end = beijing_utc(value) - pinduoduo.MIN_LAG - timedelta(seconds=5)
        after = start
        while after < end:
            before = min(after + pinduoduo.MAX_WINDOW, end)
            for status in PULL_STATUSES:
                await self.window(bucket, after, before, status, size)
            await self.advance(before)
            after = before

    async def window(
        self,
        bucket: channels_sync.TokenBucket,
        after: datetime,
        before: datetime,
        status: int,
        size: int,
    ) -> None:
        def page_of(page: int) -> Any:
            return lambda: self.client.refund_increment(
                after, before, status=status, page=page, page_size=size
            )

        first = (await self.call(bucket, page_of(1))).get("refund_increment_get_response") or {}
        last = max(math.ceil(int(first.get("total_count") or 0) / size), 1)
        # From the last page backwards, as the order pull: a record updated meanwhile leaves
        # the window's end, so earlier pages do not shift under us.
        for page in range(last, 0, -1):
            body = (
                first
                if page == 1 and last == 1
                else (await self.call(bucket, page_of(page))).get("refund_increment_get_response")
                or {}
            )
            items = [i for i in body.get("refund_list") or [] if isinstance(i, dict)]
            await self.store(items)

    async def store(self, items: list[dict[str, Any]]) -> None:
        self.outcome.pages += 1
        self.outcome.read += len(items)
        if items:
            async with self.db.transaction() as session:
                one = await self.receive(session, items)
            self.outcome.result.created += one.created
            self.outcome.result.duplicates += one.duplicates
            self.outcome.result.unknown_order += one.unknown_order
            self.outcome.result.advanced += one.advanced
            self.outcome.result.undecided += one.undecided
            self.outcome.result.refused += one.refused
        if self.outcome.pages >= self.max_pages:
            raise _Stop

    async def advance(self, to: datetime) -> None:
        """Move the cursor forward (never back) once a window is stored."""
        async with self.db.transaction() as session:
            state = await repository.pull_state(session, self.code)
            assert state is not None
            if to > clock.as_utc(state.cursor_at):
                state.cursor_at = to
            state.updated_at = clock.now()
        self.outcome.cursor_at = to


async def pull_account(
    db: Database, code: str, *, http: httpx.AsyncClient | None = None
) -> PullOutcome:
    """Pull one account's after-sale records now, from its cursor (minus the overlap) to the
    platform's safe end; raises the channel error that stopped it (recorded on its state)."""
    lock = _LOCKS.setdefault(code, asyncio.Lock())
    if lock.locked():
        raise SyncInProgress(f"a pull of {code}'s after-sale records is running", account=code)
    async with lock:
        async with db.transaction() as session:
            account = await channels_service.get_account(session, code)
            if account.platform not in PULL_PLATFORMS:
                raise SyncNotSupported(
                    f"{account.platform} after-sale records are not pulled", account=code
                )
            if not account.active:
                raise AccountInactive(f"account {code} is not active", account=code)
            # The first pull starts where the account began (minus the overlap, as every run).
            state = await repository.ensure_pull_state(
                session, code, clock.as_utc(account.created_at), clock.now()
            )
            cursor = clock.as_utc(state.cursor_at)
            credentials = channels_service.credentials_of(account)
            bucket = channels_sync.bucket_for(account)
            platform = account.platform
            client_id = str(account.config.get("client_id") or "")
            base_url = str(account.config.get("base_url") or "")
            size = min(
                account.page_size,
                aftersale_lists.PAGE_SIZES.get(platform, pinduoduo.MAX_PAGE_SIZE),
            )
            overlap = timedelta(seconds=account.overlap_seconds)
            interval = account.sync_interval_seconds
        outcome = PullOutcome(code, cursor_at=cursor)
        http = http or outbound.client(
            "channels", timeout=get_settings().channels_http_timeout_seconds
        )
        error: ChannelError | None = None
        try:
            secret = credentials.get("client_secret")
            if not client_id or not secret:
                raise MissingCredentials(
                    f"account {code} needs config.client_id and a client_secret", account=code
                )
            if not base_url:
                raise InvalidAccount(f"account {code} has no config.base_url", account=code)
            token = credentials.get("access_token") or ""
            run: _Run
            if platform == "pinduoduo":
                client = pinduoduo.PinduoduoClient(http, base_url, client_id, secret, token)
                run = _Run(db, code, client, outcome)
            else:
                lister = aftersale_lists.AfterSaleListClient(
                    platform, http, base_url, client_id, secret, token
                )
                run = _ListRun(db, code, lister, outcome)
            await run.pull(bucket, cursor - overlap, size)
            outcome.complete = True
        except _Stop:
            outcome.complete = False
        except (PlatformUnavailable, MissingCredentials, InvalidAccount) as exc:
            error = exc
        except httpx.HTTPError as exc:
            error = PlatformUnavailable(
                f"{platform} unreachable: {exc or type(exc).__name__}", account=code
            )
        await _record(db, code, interval, outcome, error)
        if error is not None:
            raise error
        return outcome


async def _record(
    db: Database, code: str, interval: int, outcome: PullOutcome, error: ChannelError | None
) -> None:
    """Write the run's result to the account's pull state."""
    now = clock.now()
    async with db.transaction() as session:
        state = await repository.pull_state(session, code)
        assert state is not None
        state.last_attempt_at = now
        state.updated_at = now
        if error is not None:
            state.error_count += 1
            state.last_error = str(error)[:2000]
            wait = getattr(error, "extra", {}).get("retry_after")
            if wait is None:
                wait = min(interval * 2 ** min(state.error_count, 10), 3600)
            state.backoff_until = now + timedelta(seconds=float(wait))
            kind = "rate_limited" if isinstance(error, RateLimited) else "error"
            PULL_RUNS.labels(code, kind).inc()
            log.warning("after-sale pull of %s failed: %s", code, error)
        else:
            state.error_count = 0
            state.last_error = None
            state.backoff_until = None
            state.last_success_at = now
            state.records_seen += outcome.read
            PULL_RUNS.labels(code, "ok" if outcome.complete else "partial").inc()


async def set_cursor(session: AsyncSession, code: str, at: datetime) -> None:
    """Put an account's after-sale pull cursor at `at` (the next pull starts there, minus the
    overlap): to re-read a period, or to start an account's pulls at its first orders."""
    account = await channels_service.get_account(session, code)
    if account.platform not in PULL_PLATFORMS:
        raise SyncNotSupported(
            f"{account.platform} after-sale records are not pulled", account=code
        )
    state = await repository.ensure_pull_state(session, code, clock.as_utc(at), clock.now())
    state.cursor_at = clock.as_utc(at)
    state.updated_at = clock.now()


async def due_accounts(session: AsyncSession, now: datetime) -> list[str]:
    """Active accounts that pull after-sale records whose pull interval has passed and who are
    not backing off (a Taobao, JD or Douyin account only when it has an API base URL)."""
    states = await repository.pull_states(session)
    due: list[str] = []
    for account in await channels_service.list_accounts(session):
        if account.platform not in PULL_PLATFORMS or not account.active:
            continue
        # A Taobao / JD / Douyin account whose orders come as files has no API to call.
        if account.platform != "pinduoduo" and not account.config.get("base_url"):
            continue
        state = states.get(account.code)
        if state is not None:
            if state.backoff_until is not None and clock.as_utc(state.backoff_until) > now:
                continue
            last = clock.as_utc(state.last_attempt_at) if state.last_attempt_at else None
            if last is not None and last + timedelta(seconds=account.sync_interval_seconds) > now:
                continue
        due.append(account.code)
    return due


async def pull_due(db: Database, now: datetime) -> dict[str, Any]:
    """Pull every due account in turn; an account's failure is recorded and the next goes on."""
    async with db.transaction(write=False) as session:
        codes = await due_accounts(session, now)
    pulled: dict[str, Any] = {}
    for code in codes:
        try:
            outcome = await pull_account(db, code)
            pulled[code] = {"created": outcome.result.created, "read": outcome.read}
        except ChannelError as exc:
            pulled[code] = {"error": str(exc)[:200]}
    return {"accounts": pulled}


# --- Taobao, JD, Douyin --------------------------------------------------------------------


def _listed(platform: str, response: httpx.Response) -> records.Page:
    """A list answer read, or the error it stands for (Taobao's code 7 slows down)."""
    doc = _json_of(platform, response)
    error = doc.get("error_response") if isinstance(doc, dict) else None
    if isinstance(error, dict):
        message = (
            f"{platform} error {error.get('code')}: {error.get('msg') or error.get('zh_desc')}"
        )
        if platform == "taobao" and error.get("code") in aftersale_lists.TAOBAO_RATE_LIMIT_CODES:
            raise RateLimited(message)
        raise PlatformUnavailable(message)
    try:
        return records.READERS[records.SOURCE_OF[platform]](doc)
    except ReportRefused as exc:
        raise PlatformUnavailable(f"{platform}: {exc.detail}") from exc


class _ListRun(_Run):
    """Taobao's, JD's or Douyin's after-sale list: windows of at most a day ending 3 minutes
    behind our clock (none of them is asked the time), each read from its last page back, every
    status at once (a record's stage decides what it does)."""

    client: aftersale_lists.AfterSaleListClient

    async def receive(self, session: AsyncSession, items: list[dict[str, Any]]) -> Any:
        source = records.SOURCE_OF[self.client.platform]
        return await platforms.receive_listed(
            session, source, items, f"{self.code}:pull", self.code
        )

    async def pull(self, bucket: channels_sync.TokenBucket, start: datetime, size: int) -> None:
        end = clock.now() - aftersale_lists.MIN_LAG - timedelta(seconds=5)
        after = start
        while after < end:
            before = min(after + aftersale_lists.MAX_WINDOW, end)
            await self.list_window(bucket, after, before, size)
            await self.advance(before)
            after = before

    async def list_window(
        self, bucket: channels_sync.TokenBucket, after: datetime, before: datetime, size: int
    ) -> None:
        platform = self.client.platform
        base = aftersale_lists.FIRST_PAGE[platform]

        async def page_of(page: int) -> records.Page:
            await bucket.take()
            answer = await self.client.page(after, before, page=page, page_size=size)
            return _listed(platform, answer)

        first = await page_of(base)
        last = max(math.ceil(first.total / size), 1)
        for index in range(last - 1, -1, -1):
            page = first if index == 0 and last == 1 else await page_of(base + index)
            await self.store(page.items)
