"""The carrier simulator's state: issued waybills, subscriptions, tracking scripts played step by
step, and pushes delivered over HTTP in Kuaidi100's format, misbehaving on command (duplicates,
out-of-order, silence, forged signs, outage). Every push attempt is recorded.

Nothing happens on its own: `advance()` plays the next step of each subscribed waybill and
awaits its pushes, so tests are deterministic. The CLI's `--push-every` calls it on a timer.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field

from ordertally.core import clock
from ordertally.fulfillment.carriers.kuaidi100 import (
    STATE_NAMES,
    compact_json,
    format_beijing_time,
    push_sign,
)
from ordertally.simkit.errors import SimError
from ordertally.simkit.misbehaviour import Dice, Misbehaviour, Outage

Final = Literal["delivered", "rejected", "returned", "problem", "silence"]
Variant = Literal["genuine", "duplicate", "stale", "forged", "retry"]

# Company code → (prefix, digits after it, display name).
COMPANIES: dict[str, tuple[str, int, str]] = {
    "shunfeng": ("SF", 12, "顺丰速运"),
    "zhongtong": ("7", 14, "中通快递"),
    "yuantong": ("YT", 13, "圆通速递"),
    "yunda": ("43", 11, "韵达快递"),
    "shentong": ("77", 13, "申通快递"),
    "jd": ("JDX", 12, "京东快递"),
    "ems": ("1", 12, "EMS"),
    "youzhengguonei": ("9", 12, "邮政快递包裹"),
}
FINALS: tuple[Final, ...] = ("delivered", "rejected", "returned", "problem", "silence")
# Kuaidi100 retries a push that was not answered result:true three times (35 min apart).
PUSH_RETRIES = 3
PUSH_TIMEOUT_SECONDS = 20.0
MAX_DELIVERIES_KEPT = 100_000


# The knobs of the kit's misbehaviour this simulator has, as its control API shows them.
MODE_FIELDS = ("duplicate_rate", "out_of_order_rate", "forge_rate", "silent")


class ModePatch(BaseModel):
    """A partial mode (how pushes misbehave, globally or for one waybill; rates are
    probabilities per push): fields left out keep their value."""

    duplicate_rate: float | None = Field(default=None, ge=0, le=1)
    out_of_order_rate: float | None = Field(default=None, ge=0, le=1)
    forge_rate: float | None = Field(default=None, ge=0, le=1)
    silent: bool | None = None


@dataclass(slots=True)
class Step:
    """One tracking step: a Kuaidi100 main state code, the carrier's words, where, when."""

    state: str
    context: str
    area_name: str = ""
    area_code: str = ""
    at: datetime | None = None  # set when played (or given by a test)


@dataclass(slots=True)
class SimSubscription:
    callback_url: str
    salt: str
    resultv2: str = "1"
    phone: str = ""
    subscribed_at: datetime = field(default_factory=clock.now)


@dataclass(slots=True)
class SimWaybill:
    """One waybill as the carrier holds it."""

    company: str
    number: str
    created_at: datetime
    order_id: str = ""
    task_id: str = ""
    final: Final = "delivered"
    script: list[Step] = field(default_factory=list)
    played: int = 0
    subscription: SimSubscription | None = None
    mode: Misbehaviour | None = None  # this waybill's own mode, when it was given one
    held: list[str] = field(default_factory=list)  # params delayed by out-of-order mode
    pushes_sent: int = 0

    @property
    def events(self) -> list[Step]:
        """The steps played so far, oldest first."""
        return self.script[: self.played]

    @property
    def done(self) -> bool:
        return self.played >= len(self.script)

    @property
    def state(self) -> str:
        """The current main state code ("" before the first step)."""
        return self.script[self.played - 1].state if self.played else ""

    @property
    def checked(self) -> bool:
        """Kuaidi100's ischeck: the waybill reached a final state the carrier closes on."""
        return self.done and self.final in ("delivered", "rejected", "returned")

    @property
    def true_status(self) -> str:
        """Our status the script ends in (for tests checking what a receiver concluded)."""
        return {
            "delivered": "delivered",
            "rejected": "exception",
            "returned": "exception",
            "problem": "exception",
            "silence": "in_transit",
        }[self.final]

    def as_json(self) -> dict[str, Any]:
        return {
            "company": self.company,
            "number": self.number,
            "order_id": self.order_id,
            "task_id": self.task_id,
            "final": self.final,
            "true_status": self.true_status,
            "steps": len(self.script),
            "played": self.played,
            "state": self.state,
            "done": self.done,
            "subscribed": self.subscription is not None,
            "callback_url": self.subscription.callback_url if self.subscription else "",
            "pushes_sent": self.pushes_sent,
            "held": len(self.held),
        }


@dataclass(slots=True)
class Delivery:
    """One push attempt and what the receiver answered."""

    number: str
    variant: Variant
    status: str  # the push's status: polling / shutdown
    state: str  # lastResult.state in the push
    events: int  # len(lastResult.data)
    http_status: int | None
    ok: bool  # answered 2xx with result true
    answer: str
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "variant": self.variant,
            "status": self.status,
            "state": self.state,
            "events": self.events,
            "http_status": self.http_status,
            "ok": self.ok,
            "answer": self.answer,
            "at": self.at.isoformat(),
        }


@dataclass(slots=True)
class _Retry:
    waybill: SimWaybill
    param: str
    sign: str
    retries_done: int = 0


def build_script(company: str, final: Final, transit_steps: int, rng: random.Random) -> list[Step]:
    """The default tracking story: 揽收, several 在途, 派件, then the final state."""
    name = COMPANIES.get(company, ("", 0, company))[2]
    origin, hub1, hub2, dest = ("深圳市", "广州", "杭州", "上海市")
    cities = [("广东省,深圳市", "440300"), ("广东省,广州市", "440100"), ("浙江省,杭州市", "330100")]
    courier = f"{rng.choice('张王李赵刘陈')}师傅（138{rng.randrange(10**8):08d}）"
    steps = [Step("1", f"【{origin}】{name} 已揽收，揽投员：{courier}", *cities[0])]
    transit = [
        Step("0", f"【{origin}】快件已发往 {hub1}转运中心", *cities[0]),
        Step("0", f"【{hub1}】快件已到达 {hub1}转运中心", *cities[1]),
        Step("0", f"【{hub1}】快件已从 {hub1}转运中心 发出，准备发往 {hub2}转运中心", *cities[1]),
        Step("0", f"【{hub2}】快件已到达 {hub2}转运中心", *cities[2]),
        Step("0", f"【{hub2}】快件已发往 上海转运中心", *cities[2]),
        Step("0", "【上海市】快件已到达 上海转运中心", "上海,上海市", "310000"),
    ]
    for index in range(transit_steps):
        base = transit[index % len(transit)]
        steps.append(Step(base.state, base.context, base.area_name, base.area_code))
    if final == "silence":
        return steps
    area = ("上海,上海市,浦东新区", "310115")
    steps.append(Step("5", f"【{dest}】快件派送中，派件员：{courier}，请保持电话畅通", *area))
    if final == "delivered":
        steps.append(Step("3", f"【{dest}】已签收，签收人是本人，感谢使用{name}", *area))
    elif final == "rejected":
        steps.append(Step("14", f"【{dest}】收件人拒收，快件将退回寄件人", *area))
    elif final == "returned":
        steps.append(Step("6", f"【{dest}】收件地址不详，快件已退回寄件人", *area))
    else:
        steps.append(Step("2", f"【{dest}】收件人电话无人接听，快件滞留网点", *area))
    return steps


class CarrierSimulator:
    """The carrier's memory and behaviour. Methods that send pushes are coroutines; run them on
    the loop that serves the app (the `server` module does that for tests). `concurrency` caps
    pushes in flight (httpx slows down past about ten; measured ~500 pushes/s at 8)."""

    def __init__(
        self,
        *,
        key: str = "sim-key",
        customer: str = "SIMCUSTOMER",
        secret: str = "sim-secret",
        seed: int | None = None,
        concurrency: int = 8,
        push_timeout_seconds: float = PUSH_TIMEOUT_SECONDS,
    ) -> None:
        self.key = key
        self.customer = customer
        self.secret = secret
        self.concurrency = concurrency
        self.push_timeout_seconds = push_timeout_seconds
        self.rng = Dice(seed)
        self.mode = Misbehaviour()
        self.default_final: Final = "delivered"
        self.default_transit_steps = 3
        self.waybills: dict[tuple[str, str], SimWaybill] = {}
        self.by_order: dict[str, SimWaybill] = {}
        self.deliveries: list[Delivery] = []
        self.retries: list[_Retry] = []
        self.outage = Outage()  # the carrier APIs answer 503 while it lasts
        self.requests = 0  # API requests seen (not control)
        self._client: httpx.AsyncClient | None = None
        self._issued: set[str] = set()

    # --- outage -----------------------------------------------------------------------------

    def set_down(self, seconds: float | None = None, requests: int | None = None) -> None:
        """Answer 503 to the carrier APIs for a while and/or for the next N requests (0 = up)."""
        if seconds is not None:
            self.outage.fail_for(seconds)
        if requests is not None:
            self.outage.fail_next(requests)

    @property
    def down_requests(self) -> int:
        """How many of the next API requests will be answered 503."""
        return self.outage.remaining

    def take_down(self) -> bool:
        """Count one API request; True when it must be answered 503."""
        self.requests += 1
        return self.outage.take() is not None

    # --- waybills and subscriptions -------------------------------------------------------

    def _new_number(self, company: str) -> str:
        prefix, digits, _ = COMPANIES[company]
        while True:
            number = prefix + f"{self.rng.randrange(10**digits):0{digits}d}"
            if number not in self._issued:
                self._issued.add(number)
                return number

    def _track(self, company: str, number: str, order_id: str = "") -> SimWaybill:
        waybill = self.waybills.get((company, number))
        if waybill is None:
            waybill = SimWaybill(company=company, number=number, created_at=clock.now())
            waybill.order_id = order_id
            waybill.final = self.default_final
            waybill.script = build_script(
                company, waybill.final, self.default_transit_steps, self.rng
            )
            self.waybills[(company, number)] = waybill
        return waybill

    def issue(self, company: str, order_id: str) -> tuple[SimWaybill, bool]:
        """An electronic waybill for an order id: the same one again for a repeated id."""
        if company not in COMPANIES:
            raise SimError(400, "unknown_company", f"不支持的快递公司: {company}")
        existing = self.by_order.get(order_id)
        if existing is not None:
            if existing.company != company:
                raise SimError(400, "order_conflict", "订单号已用于其他快递公司")
            return existing, False
        waybill = self._track(company, self._new_number(company), order_id)
        waybill.task_id = secrets.token_hex(16).upper()
        self.by_order[order_id] = waybill
        return waybill, True

    def subscribe(
        self,
        company: str,
        number: str,
        callback_url: str,
        salt: str,
        *,
        resultv2: str = "1",
        phone: str = "",
    ) -> bool:
        """Subscribe a waybill's pushes; False when it was already subscribed (kept as is)."""
        if company not in COMPANIES:
            raise SimError(400, "unknown_company", f"拒绝订阅的快递公司: {company}")
        waybill = self._track(company, number)
        if waybill.subscription is not None:
            return False
        waybill.subscription = SimSubscription(callback_url, salt, resultv2, phone)
        return True

    def find(self, company: str, number: str) -> SimWaybill | None:
        return self.waybills.get((company, number))

    def _get(self, number: str) -> SimWaybill:
        for waybill in self.waybills.values():
            if waybill.number == number:
                return waybill
        raise SimError(404, "unknown_waybill", f"no waybill {number}")

    def set_script(
        self,
        number: str,
        *,
        final: Final | None = None,
        transit_steps: int | None = None,
        steps: Iterable[Step] | None = None,
    ) -> SimWaybill:
        """Rewrite a waybill's script before it is played (a final state, a length or steps)."""
        waybill = self._get(number)
        if waybill.played:
            raise SimError(409, "already_playing", "the script has started")
        if final is not None:
            waybill.final = final
        if steps is not None:
            waybill.script = list(steps)
        else:
            count = self.default_transit_steps if transit_steps is None else transit_steps
            waybill.script = build_script(waybill.company, waybill.final, count, self.rng)
        return waybill

    def set_mode(self, patch: ModePatch, number: str | None = None) -> Misbehaviour:
        """Change how pushes misbehave, for everyone or one waybill; answers the mode in force."""
        changes = patch.model_dump(exclude_none=True)
        if number is None:
            self.mode = self.mode.patched(changes)
            return self.mode
        waybill = self._get(number)
        waybill.mode = self._mode_of(waybill).patched(changes)
        return waybill.mode

    def _mode_of(self, waybill: SimWaybill) -> Misbehaviour:
        return waybill.mode if waybill.mode is not None else self.mode

    # --- the Kuaidi100 documents ------------------------------------------------------------

    def last_result(self, waybill: SimWaybill, played: int | None = None) -> dict[str, Any]:
        """lastResult (and the query answer) after `played` steps: data newest first."""
        count = waybill.played if played is None else played
        resultv2 = waybill.subscription.resultv2 if waybill.subscription else "1"
        data = []
        for step in reversed(waybill.script[:count]):
            stamp = format_beijing_time(step.at or waybill.created_at)
            item: dict[str, Any] = {"context": step.context, "time": stamp, "ftime": stamp}
            if resultv2 in ("1", "4"):
                item |= {
                    "status": STATE_NAMES.get(step.state, ""),
                    "areaCode": step.area_code,
                    "areaName": step.area_name,
                    "location": "",
                }
            if resultv2 == "4":
                item["statusCode"] = step.state
            data.append(item)
        done = count >= len(waybill.script)
        state = waybill.script[count - 1].state if count else "0"
        checked = done and waybill.final in ("delivered", "rejected", "returned")
        return {
            "message": "ok",
            "nu": waybill.number,
            "ischeck": "1" if checked else "0",
            "condition": "F00" if checked else "00",
            "com": waybill.company,
            "status": "200",
            "state": state,
            "data": data,
        }

    def push_param(self, waybill: SimWaybill, played: int | None = None) -> str:
        """A push's `param` after `played` steps."""
        last = self.last_result(waybill, played)
        shutdown = last["ischeck"] == "1"
        doc = {
            "status": "shutdown" if shutdown else "polling",
            "billstatus": "check" if shutdown else "got",
            "message": "",
            "autoCheck": "0",
            "comOld": "",
            "comNew": "",
            "lastResult": last,
        }
        return compact_json(doc)

    def _forged_param(self, waybill: SimWaybill) -> str:
        last = self.last_result(waybill)
        stamp = format_beijing_time(clock.now())
        last["state"], last["ischeck"] = "3", "1"
        item = {"context": "已签收，签收人是本人", "time": stamp, "ftime": stamp}
        last["data"] = [{**item, "status": "签收", "areaCode": "", "areaName": ""}, *last["data"]]
        doc = {"status": "shutdown", "message": "", "lastResult": last}
        return compact_json(doc)

    # --- playing and pushing ----------------------------------------------------------------

    def _play(self, waybill: SimWaybill) -> None:
        step = waybill.script[waybill.played]
        if step.at is None:
            previous = waybill.script[waybill.played - 1].at if waybill.played else None
            # Kuaidi100 writes whole seconds; each step is at least a second after the one before
            # (even with a frozen clock), so no two steps of a waybill share a timestamp.
            now = clock.now().replace(microsecond=0)
            step.at = now if previous is None or now > previous else previous + timedelta(seconds=1)
        waybill.played += 1

    def _selected(self, number: str | None) -> list[SimWaybill]:
        if number is not None:
            waybill = self._get(number)
            if waybill.subscription is None:
                raise SimError(409, "not_subscribed", f"{number} has no subscription")
            return [waybill]
        return [w for w in self.waybills.values() if w.subscription is not None]

    async def advance(self, number: str | None = None, steps: int = 1) -> list[Delivery]:
        """Play the next `steps` steps of one (or every) subscribed waybill and send the pushes;
        returns when every push was answered."""
        waybills = self._selected(number)
        semaphore = asyncio.Semaphore(self.concurrency)

        async def run(waybill: SimWaybill) -> list[Delivery]:
            async with semaphore:
                out: list[Delivery] = []
                for _ in range(steps):
                    if waybill.done:
                        break
                    self._play(waybill)
                    out += await self._push_step(waybill)
                return out

        results = await asyncio.gather(*(run(w) for w in waybills))
        return [d for chunk in results for d in chunk]

    async def run_to_end(self, number: str | None = None) -> list[Delivery]:
        """Play every remaining step (then send what out-of-order mode still holds)."""
        longest = max((len(w.script) for w in self._selected(number)), default=0)
        deliveries = await self.advance(number, steps=longest)
        return deliveries + await self.flush(number)

    async def _push_step(self, waybill: SimWaybill) -> list[Delivery]:
        mode = self._mode_of(waybill)
        if mode.silent:
            return []
        param = self.push_param(waybill)
        out: list[Delivery] = []
        if not waybill.done and not waybill.held and self.rng.hits(mode.out_of_order_rate):
            waybill.held.append(param)  # sent after the next (newer) one
            return out
        assert waybill.subscription is not None
        sign = push_sign(param, waybill.subscription.salt)
        out.append(await self._send(waybill, param, sign, "genuine"))
        if self.rng.hits(mode.duplicate_rate):
            out.append(await self._send(waybill, param, sign, "duplicate"))
        out += await self._send_held(waybill)
        if self.rng.hits(mode.forge_rate):
            forged = self._forged_param(waybill)
            bad = push_sign(forged, "forged-" + waybill.subscription.salt)
            out.append(await self._send(waybill, forged, bad, "forged"))
        return out

    async def _send_held(self, waybill: SimWaybill) -> list[Delivery]:
        assert waybill.subscription is not None
        out = []
        while waybill.held:
            param = waybill.held.pop(0)
            sign = push_sign(param, waybill.subscription.salt)
            out.append(await self._send(waybill, param, sign, "stale"))
        return out

    async def flush(self, number: str | None = None) -> list[Delivery]:
        """Send the pushes out-of-order mode still holds back."""
        out: list[Delivery] = []
        for waybill in self._selected(number):
            out += await self._send_held(waybill)
        return out

    async def retry(self) -> list[Delivery]:
        """Send once more every push that was not answered result:true (up to 3 retries)."""
        pending, self.retries = self.retries, []
        out = []
        for item in pending:
            delivery = await self._send(item.waybill, item.param, item.sign, "retry", item)
            out.append(delivery)
        return out

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                timeout=self.push_timeout_seconds,
                limits=httpx.Limits(max_connections=self.concurrency),
            )
        return self._client

    async def _send(
        self,
        waybill: SimWaybill,
        param: str,
        sign: str,
        variant: Variant,
        retry: _Retry | None = None,
    ) -> Delivery:
        assert waybill.subscription is not None
        status_code: int | None = None
        answer = ""
        ok = False
        try:
            response = await self._http().post(
                waybill.subscription.callback_url, data={"param": param, "sign": sign}
            )
            status_code, answer = response.status_code, response.text[:500]
            try:
                body = response.json()
            except ValueError:
                body = None
            ok = response.is_success and isinstance(body, dict) and body.get("result") is True
        except httpx.HTTPError as exc:
            answer = f"{type(exc).__name__}: {exc}"[:500]
        waybill.pushes_sent += 1
        doc = _loads(param)
        last = doc.get("lastResult") or {}
        delivery = Delivery(
            number=waybill.number,
            variant=variant,
            status=str(doc.get("status", "")),
            state=str(last.get("state", "")),
            events=len(last.get("data") or []),
            http_status=status_code,
            ok=ok,
            answer=answer,
            at=clock.now(),
        )
        self.deliveries.append(delivery)
        if len(self.deliveries) > MAX_DELIVERIES_KEPT:
            del self.deliveries[: len(self.deliveries) - MAX_DELIVERIES_KEPT]
        if not ok and variant != "forged":
            done = retry.retries_done + 1 if retry else 0
            if done < PUSH_RETRIES:
                self.retries.append(_Retry(waybill, param, sign, done))
        return delivery

    async def reset(self) -> None:
        """Forget every waybill, delivery and mode."""
        self.waybills.clear()
        self.by_order.clear()
        self.deliveries.clear()
        self.retries.clear()
        self._issued.clear()
        self.mode = Misbehaviour()
        self.default_final = "delivered"
        self.default_transit_steps = 3
        self.outage.heal()

    async def aclose(self) -> None:
        """Close the push client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _loads(param: str) -> dict[str, Any]:
    try:
        doc = json.loads(param)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
