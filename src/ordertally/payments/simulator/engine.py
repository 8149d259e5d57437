"""The simulator's state and behaviour: payments of both platforms in memory, the buyer's
actions (pay, refund, close), and notifications delivered over HTTP from background tasks with
each platform's retry schedule, misbehaving on command (drop, delay, duplicate, reorder, forge,
replay stale). Every attempt is recorded."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, Field

from ordertally.core import clock
from ordertally.payments.simulator import messages
from ordertally.payments.simulator.bills import BillRow
from ordertally.payments.simulator.keys import SimKeys
from ordertally.simkit.errors import SimError
from ordertally.simkit.misbehaviour import Dice, Misbehaviour

log = logging.getLogger(__name__)

Provider = Literal["wechatpay", "alipay"]
State = Literal["NOTPAY", "SUCCESS", "CLOSED", "REFUND"]
Variant = Literal["genuine", "duplicate", "forged", "stale"]

# Seconds between attempts after the first (first attempt at once), from each platform's docs.
WECHAT_RETRY_SECONDS: tuple[int, ...] = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600)
WECHAT_RETRY_SECONDS += (10800, 10800, 10800, 21600, 21600)
ALIPAY_RETRY_SECONDS = (240, 600, 600, 3600, 7200, 21600, 54000)
RETRY_SECONDS: dict[str, tuple[int, ...]] = {
    "wechatpay": WECHAT_RETRY_SECONDS,
    "alipay": ALIPAY_RETRY_SECONDS,
}
# WeChat Pay gives a merchant 5 s to answer; Alipay about as long.
SEND_TIMEOUT_SECONDS = 5.0
MAX_DELIVERIES_KEPT = 50_000
MAX_RECORDED_BODY = 4096


# The knobs of the kit's misbehaviour this simulator has, as its control API shows them.
BEHAVIOUR_FIELDS = (
    "drop_rate",
    "duplicate_rate",
    "delay_seconds",
    "reorder",
    "reorder_window_seconds",
    "forge_rate",
    "stale_rate",
    "seed",
)


class BehaviourPatch(BaseModel):
    """A partial update of the behaviour: fields left out keep their value. Rates are
    probabilities per notification."""

    drop_rate: float | None = Field(default=None, ge=0, le=1)
    duplicate_rate: float | None = Field(default=None, ge=0, le=1)
    delay_seconds: float | None = Field(default=None, ge=0, le=3600)
    reorder: bool | None = None
    reorder_window_seconds: float | None = Field(default=None, gt=0, le=600)
    forge_rate: float | None = Field(default=None, ge=0, le=1)
    stale_rate: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    # The refund APIs make the refund, then answer this late (a caller that times out first
    # lost the answer, not the refund: it must ask, not send again).
    refund_answer_delay_seconds: float | None = Field(default=None, ge=0, le=60)


@dataclass(slots=True)
class SimRefund:
    out_refund_no: str
    refund_id: str
    amount_minor: int
    at: datetime


@dataclass(slots=True)
class SimPayment:
    """One trade as the platform holds it."""

    provider: Provider
    out_trade_no: str
    amount_minor: int
    description: str
    notify_url: str
    created_at: datetime
    code: str  # WeChat code_url or Alipay qr_code
    state: State = "NOTPAY"
    trade_no: str = ""
    buyer: str = ""
    paid_at: datetime | None = None
    closed_at: datetime | None = None
    expires_at: datetime | None = None  # time_expire: unpaid past it, the trade closes
    refunds: list[SimRefund] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)

    @property
    def refunded_minor(self) -> int:
        return sum(r.amount_minor for r in self.refunds)

    @property
    def alipay_status(self) -> str:
        """The trade_status Alipay reports for this state."""
        if self.state == "NOTPAY":
            return "WAIT_BUYER_PAY"
        if self.state == "CLOSED":
            return "TRADE_CLOSED"
        if self.state == "REFUND" and self.refunded_minor >= self.amount_minor:
            return "TRADE_CLOSED"
        return "TRADE_SUCCESS"

    def as_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "out_trade_no": self.out_trade_no,
            "amount_minor": self.amount_minor,
            "description": self.description,
            "notify_url": self.notify_url,
            "state": self.state,
            "trade_state": self.alipay_status if self.provider == "alipay" else self.state,
            "trade_no": self.trade_no or None,
            "code": self.code,
            "created_at": self.created_at.isoformat(),
            "paid_at": self.paid_at.isoformat() if self.paid_at else None,
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "refunded_minor": self.refunded_minor,
            "refunds": [
                {
                    "out_refund_no": r.out_refund_no,
                    "refund_id": r.refund_id,
                    "amount_minor": r.amount_minor,
                    "at": r.at.isoformat(),
                }
                for r in self.refunds
            ],
            "notifications": self.notifications,
        }


@dataclass(slots=True)
class Outgoing:
    """A notification to deliver; `build(variant)` gives the headers and body of one send."""

    provider: Provider
    out_trade_no: str
    kind: Literal["payment", "refund"]
    url: str
    build: Callable[[Variant], tuple[dict[str, str], bytes]]
    summary: dict[str, Any]


class Simulator:
    """Both platforms' trades, and the notifier that tells ordertally about them."""

    def __init__(self, keys: SimKeys, *, time_scale: float = 1.0, concurrency: int = 50) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.keys = keys
        self.time_scale = time_scale
        self.payments: dict[tuple[str, str], SimPayment] = {}
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=MAX_DELIVERIES_KEPT)
        self.behaviour = Misbehaviour()
        self.refund_answer_delay_seconds = 0.0
        self.refund_requests = 0  # refund API calls received (the tests count resends)
        self._dice = Dice()
        self._ids = itertools.count(1)
        self._concurrency = concurrency
        self._semaphore: asyncio.Semaphore | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._held: list[Outgoing] = []
        self._flusher: asyncio.Task[Any] | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def _http(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        if self._client is None or self._semaphore is None:
            self._client = httpx.AsyncClient(
                timeout=SEND_TIMEOUT_SECONDS,
                limits=httpx.Limits(max_connections=self._concurrency),
                headers={"User-Agent": "ordertally-paysim"},
                trust_env=False,
            )
            self._semaphore = asyncio.Semaphore(self._concurrency)
        return self._client, self._semaphore

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def pending(self) -> int:
        """Notifications still being delivered (or waiting for a retry)."""
        return len(self._tasks) + len(self._held)

    async def wait_idle(self, within: float = 30.0) -> bool:
        """Wait until no delivery is under way; False when still busy after `within` s."""
        deadline = time.monotonic() + within
        while self.pending:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def cancel_deliveries(self) -> None:
        """Stop every delivery under way (reset, shutdown)."""
        self._held.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def aclose(self) -> None:
        """Cancel deliveries and close the HTTP client."""
        await self.cancel_deliveries()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._semaphore = None

    async def reset(self) -> None:
        """Forget every payment and delivery; behaviour back to normal."""
        await self.cancel_deliveries()
        self.payments.clear()
        self.deliveries.clear()
        self.behaviour = Misbehaviour()
        self.refund_answer_delay_seconds = 0.0
        self.refund_requests = 0

    async def set_behaviour(self, patch: BehaviourPatch) -> Misbehaviour:
        """Change how notifications misbehave (fields not given keep their value)."""
        changes = patch.model_dump(exclude_unset=True)
        delay = changes.pop("refund_answer_delay_seconds", None)
        if delay is not None:
            self.refund_answer_delay_seconds = float(delay)
        self.behaviour = self.behaviour.patched(changes)
        if "seed" in changes:
            self._dice.seed(changes["seed"])
        if self.behaviour.forge_rate:
            # The forger's key takes a moment to generate: not on the event loop.
            await asyncio.to_thread(messages.forger_key)
        return self.behaviour

    def behaviour_json(self) -> dict[str, Any]:
        """How notifications misbehave now, as the control API shows it."""
        return self.behaviour.view(BEHAVIOUR_FIELDS)

    # --- trades -----------------------------------------------------------------------------

    def get(self, provider: str, out_trade_no: str) -> SimPayment:
        payment = self.find(provider, out_trade_no)
        if payment is None:
            raise SimError(404, "ORDER_NOT_EXIST", f"no {provider} trade {out_trade_no!r}")
        return payment

    def find(self, provider: str, out_trade_no: str) -> SimPayment | None:
        payment = self.payments.get((provider, out_trade_no))
        if payment is not None:
            _close_if_expired(payment)
        return payment

    def find_refund(self, provider: str, out_refund_no: str) -> tuple[SimPayment, SimRefund] | None:
        """The refund made under a refund number, with its trade."""
        for payment in self.payments.values():
            if payment.provider != provider:
                continue
            for refund in payment.refunds:
                if refund.out_refund_no == out_refund_no:
                    return payment, refund
        return None

    def find_by_trade_no(self, provider: str, trade_no: str) -> SimPayment | None:
        for payment in self.payments.values():
            if payment.provider == provider and payment.trade_no == trade_no:
                return payment
        return None

    def create(
        self,
        provider: Provider,
        out_trade_no: str,
        amount_minor: int,
        *,
        notify_url: str,
        description: str = "",
        expires_at: datetime | None = None,
    ) -> SimPayment:
        """Open a trade (Native order / precreate); the same request again returns it. A trade
        with `expires_at` (time_expire) still unpaid at that moment is closed by the platform."""
        now = clock.now()
        existing = self.find(provider, out_trade_no)
        if existing is not None:
            if existing.amount_minor != amount_minor:
                raise SimError(400, "INVALID_REQUEST", "out_trade_no reused with another amount")
            return existing
        if provider == "wechatpay":
            code = f"weixin://wxpay/bizpayurl?pr={messages.new_nonce()[:11]}"
        else:
            code = f"https://qr.alipay.com/bax0{messages.new_nonce()[:20].lower()}"
        payment = SimPayment(
            provider=provider,
            out_trade_no=out_trade_no,
            amount_minor=amount_minor,
            description=description,
            notify_url=notify_url,
            created_at=now,
            code=code,
            expires_at=expires_at,
        )
        if provider == "alipay":
            # Alipay numbers the trade when it is created.
            payment.trade_no = messages.new_trade_no(now)
        self.payments[(provider, out_trade_no)] = payment
        return payment

    def pay(self, provider: str, out_trade_no: str) -> SimPayment:
        """The buyer pays: the trade is paid and ordertally is notified."""
        payment = self.get(provider, out_trade_no)
        if payment.state == "CLOSED":
            raise SimError(409, "ORDER_CLOSED", "the trade is closed; it cannot be paid")
        if payment.state != "NOTPAY":
            raise SimError(409, "ORDERPAID", "the trade is already paid")
        now = clock.now()
        payment.state = "SUCCESS"
        payment.paid_at = now
        if provider == "wechatpay":
            payment.trade_no = messages.new_transaction_id(now)
            payment.buyer = messages.new_openid()
        else:
            payment.buyer = messages.new_buyer_id()
        self._notify(self._payment_notification(payment))
        return payment

    def close(self, provider: str, out_trade_no: str) -> SimPayment:
        """Close an unpaid trade (closing a closed one is a no-op)."""
        payment = self.get(provider, out_trade_no)
        if payment.state in ("SUCCESS", "REFUND"):
            raise SimError(409, "ORDERPAID", "the trade is paid; it cannot be closed")
        if payment.state == "NOTPAY":
            payment.state = "CLOSED"
            payment.closed_at = clock.now()
        return payment

    def refund(
        self,
        provider: str,
        out_trade_no: str,
        amount_minor: int,
        *,
        out_refund_no: str | None = None,
        notify_url: str | None = None,
    ) -> tuple[SimPayment, SimRefund]:
        """Refund part or all of a paid trade; ordertally is notified. The same out_refund_no
        again returns the refund already made."""
        payment = self.get(provider, out_trade_no)
        if out_refund_no:
            for done in payment.refunds:
                if done.out_refund_no == out_refund_no:
                    if done.amount_minor != amount_minor:
                        raise SimError(400, "INVALID_REQUEST", "out_refund_no reused")
                    return payment, done
        if payment.state not in ("SUCCESS", "REFUND"):
            raise SimError(409, "TRADE_NOT_PAID", "only a paid trade can be refunded")
        if amount_minor <= 0 or payment.refunded_minor + amount_minor > payment.amount_minor:
            raise SimError(409, "NOT_ENOUGH", "the refund exceeds what is left of the payment")
        now = clock.now()
        n = len(payment.refunds) + 1
        refund = SimRefund(
            out_refund_no=out_refund_no or f"RF{out_trade_no}{n:02d}"[:64],
            refund_id=messages.new_refund_id(now),
            amount_minor=amount_minor,
            at=now,
        )
        payment.refunds.append(refund)
        payment.state = "REFUND"
        self._notify(self._refund_notification(payment, refund, notify_url))
        return payment, refund

    def renotify(self, provider: str, out_trade_no: str) -> SimPayment:
        """Send the trade's payment notification again, as a fresh delivery."""
        payment = self.get(provider, out_trade_no)
        if payment.paid_at is None:
            raise SimError(409, "TRADE_NOT_PAID", "an unpaid trade has nothing to notify")
        self._notify(self._payment_notification(payment))
        return payment

    # --- statements -------------------------------------------------------------------------

    def bill_rows(self, provider: str, day: date) -> Iterator[BillRow]:
        """The statement lines of one Beijing-time day: payments, then refunds, by time."""
        rows: list[BillRow] = []

        def on_day(at: datetime | None) -> bool:
            return at is not None and at.astimezone(messages.BEIJING).date() == day

        for p in self.payments.values():
            if p.provider != provider or p.paid_at is None:
                continue
            buyer = p.buyer if provider == "wechatpay" else "159****5620"
            subject = p.description or "ordertally order"
            if on_day(p.paid_at):
                rows.append(
                    BillRow(
                        p.out_trade_no,
                        p.trade_no,
                        p.amount_minor,
                        p.paid_at,
                        subject=subject,
                        buyer=buyer,
                    )
                )
            for r in p.refunds:
                if on_day(r.at):
                    rows.append(
                        BillRow(
                            p.out_trade_no,
                            p.trade_no,
                            p.amount_minor,
                            r.at,
                            kind="refund",
                            refund_minor=r.amount_minor,
                            out_refund_no=r.out_refund_no,
                            refund_id=r.refund_id,
                            subject=subject,
                            buyer=buyer,
                        )
                    )
        rows.sort(key=lambda row: row.at)
        return iter(rows)

    # --- notifications ----------------------------------------------------------------------

    def _payment_notification(self, payment: SimPayment) -> Outgoing:
        keys = self.keys
        paid_at = payment.paid_at or clock.now()
        build: Callable[[Variant], tuple[dict[str, str], bytes]]
        if payment.provider == "wechatpay":
            resource = messages.wechat_transaction(
                keys,
                payment.out_trade_no,
                payment.amount_minor,
                transaction_id=payment.trade_no,
                success_time=paid_at,
                openid=payment.buyer,
            )
            body = messages.wechat_notification_body(keys, resource)
            build = self._wechat_builder(body)
        else:
            notify_id = messages.new_notify_id()
            amount = messages.yuan(payment.amount_minor)

            def build(variant: Variant) -> tuple[dict[str, str], bytes]:
                fields = messages.alipay_notification(
                    keys,
                    payment.out_trade_no,
                    amount,
                    notify_id=notify_id,
                    gmt_payment=paid_at,
                    gmt_create=payment.created_at,
                    trade_no=payment.trade_no,
                    buyer_id=payment.buyer,
                    subject=payment.description or "ordertally order",
                    notify_time=_stale() if variant == "stale" else None,
                    sign_key=messages.forger_key() if variant == "forged" else None,
                )
                return _form(fields)

        return Outgoing(
            provider=payment.provider,
            out_trade_no=payment.out_trade_no,
            kind="payment",
            url=payment.notify_url,
            build=build,
            summary={"kind": "payment", "state": "pending", "attempts": 0},
        )

    def _refund_notification(
        self, payment: SimPayment, refund: SimRefund, notify_url: str | None
    ) -> Outgoing:
        keys = self.keys
        build: Callable[[Variant], tuple[dict[str, str], bytes]]
        if payment.provider == "wechatpay":
            resource = messages.wechat_refund(
                keys,
                payment.out_trade_no,
                payment.trade_no,
                payment.amount_minor,
                refund.amount_minor,
                out_refund_no=refund.out_refund_no,
                refund_id=refund.refund_id,
                success_time=refund.at,
            )
            body = messages.wechat_notification_body(keys, resource, event_type="REFUND.SUCCESS")
            build = self._wechat_builder(body)
        else:
            notify_id = messages.new_notify_id()
            refunded_so_far = sum(
                r.amount_minor for r in payment.refunds[: payment.refunds.index(refund) + 1]
            )
            paid_at = payment.paid_at or refund.at

            def build(variant: Variant) -> tuple[dict[str, str], bytes]:
                fields = messages.alipay_refund_notification(
                    keys,
                    payment.out_trade_no,
                    messages.yuan(payment.amount_minor),
                    messages.yuan(refunded_so_far),
                    out_biz_no=refund.out_refund_no,
                    trade_no=payment.trade_no,
                    gmt_payment=paid_at,
                    fully_refunded=refunded_so_far >= payment.amount_minor,
                    gmt_refund=refund.at,
                    notify_id=notify_id,
                    sign_key=messages.forger_key() if variant == "forged" else None,
                    notify_time=_stale() if variant == "stale" else None,
                    buyer_id=payment.buyer,
                )
                return _form(fields)

        return Outgoing(
            provider=payment.provider,
            out_trade_no=payment.out_trade_no,
            kind="refund",
            url=notify_url or payment.notify_url,
            build=build,
            summary={
                "kind": "refund",
                "out_refund_no": refund.out_refund_no,
                "state": "pending",
                "attempts": 0,
            },
        )

    def _wechat_builder(self, body: bytes) -> Callable[[Variant], tuple[dict[str, str], bytes]]:
        keys = self.keys

        def build(variant: Variant) -> tuple[dict[str, str], bytes]:
            if variant == "forged":
                headers = messages.wechat_sign_headers(keys, body, sign_key=messages.forger_key())
            elif variant == "stale":
                headers = messages.wechat_sign_headers(
                    keys, body, timestamp=int(_stale().timestamp())
                )
            else:
                headers = messages.wechat_sign_headers(keys, body)
            headers["Content-Type"] = "application/json"
            return headers, body

        return build

    def _notify(self, out: Outgoing) -> None:
        payment = self.payments[(out.provider, out.out_trade_no)]
        payment.notifications.append(out.summary)
        if not out.url:
            out.summary["state"] = "no_notify_url"
            return
        behaviour = self.behaviour
        if self._dice.hits(behaviour.drop_rate):
            out.summary["state"] = "dropped"
            self._record(out, "dropped", 0, None, None, None, None, 0.0)
            return
        if behaviour.reorder:
            self._held.append(out)
            if self._flusher is None or self._flusher.done():
                self._flusher = self._spawn(self._release_held(behaviour.reorder_window_seconds))
            return
        self._spawn(self._deliver(out, behaviour, behaviour.delay_seconds))

    async def _release_held(self, window: float) -> None:
        """Reorder: hold notifications for a window, then send the newest first."""
        await asyncio.sleep(window)
        held, self._held = self._held[::-1], []
        stagger = min(0.05, window / max(len(held), 1))
        for i, out in enumerate(held):
            self._spawn(
                self._deliver(out, self.behaviour, self.behaviour.delay_seconds + i * stagger)
            )

    async def _deliver(self, out: Outgoing, behaviour: Misbehaviour, delay: float) -> None:
        """Send until ordertally answers success or the retry schedule is spent."""
        if delay:
            await asyncio.sleep(delay)
        if self._dice.hits(behaviour.forge_rate):
            self._spawn(self._send(out, "forged", 1))
        if self._dice.hits(behaviour.stale_rate):
            self._spawn(self._send(out, "stale", 1))
        duplicate = self._dice.hits(behaviour.duplicate_rate)
        schedule = RETRY_SECONDS[out.provider]
        out.summary["state"] = "delivering"
        for attempt in range(1, len(schedule) + 2):
            if attempt > 1:
                await asyncio.sleep(schedule[attempt - 2] / self.time_scale)
            out.summary["attempts"] = attempt
            if duplicate:
                results = await asyncio.gather(
                    self._send(out, "genuine", attempt), self._send(out, "duplicate", attempt)
                )
                ok = any(results)
            else:
                ok = await self._send(out, "genuine", attempt)
            if ok:
                out.summary["state"] = "delivered"
                return
        out.summary["state"] = "gave_up"

    async def _send(self, out: Outgoing, variant: Variant, attempt: int) -> bool:
        """One POST to ordertally; True when it answered the platform's idea of success."""
        headers, body = out.build(variant)
        client, semaphore = self._http()
        status: int | None = None
        text: str | None = None
        error: str | None = None
        async with semaphore:
            started = time.perf_counter()
            try:
                response = await client.post(out.url, content=body, headers=headers)
                status, text = response.status_code, response.text
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - started
        if out.provider == "wechatpay":
            ok = status in (200, 204)
        else:
            ok = status == 200 and text == "success"
        answer = text if text is not None else error
        self._record(out, variant, attempt, headers, body, status, answer, elapsed, ok)
        return ok

    def _record(
        self,
        out: Outgoing,
        variant: str,
        attempt: int,
        headers: dict[str, str] | None,
        body: bytes | None,
        status: int | None,
        answer: str | None,
        elapsed: float,
        ok: bool = False,
    ) -> None:
        self.deliveries.append(
            {
                "id": next(self._ids),
                "at": clock.now().isoformat(),
                "provider": out.provider,
                "out_trade_no": out.out_trade_no,
                "kind": out.kind,
                "variant": variant,
                "attempt": attempt,
                "url": out.url,
                "request_headers": headers,
                "request_body": body.decode("utf-8", "replace")[:MAX_RECORDED_BODY]
                if body is not None
                else None,
                "status": status,
                "response": (answer or "")[:MAX_RECORDED_BODY] if answer is not None else None,
                "success": ok,
                "elapsed_ms": round(elapsed * 1000, 2),
            }
        )


def _close_if_expired(payment: SimPayment) -> None:
    """The platform closes an unpaid trade at its time_expire (seen on the next look at it)."""
    if (
        payment.state == "NOTPAY"
        and payment.expires_at is not None
        and clock.now() >= payment.expires_at
    ):
        payment.state = "CLOSED"
        payment.closed_at = payment.expires_at


def _stale() -> datetime:
    return clock.now() - timedelta(seconds=messages.STALE_SECONDS)


def _form(fields: dict[str, str]) -> tuple[dict[str, str], bytes]:
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    return headers, urlencode(fields).encode()
