"""The carrier simulator's HTTP server: Kuaidi100's label, subscription and query APIs (verifying
our signs), and the control API under /_sim for tests, the demo and operators."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from ordertally.fulfillment.carriers.kuaidi100 import label_sign, query_sign
from ordertally.fulfillment.simulator.engine import (
    MODE_FIELDS,
    CarrierSimulator,
    Final,
    ModePatch,
)
from ordertally.simkit.app import simulator_app
from ordertally.simkit.errors import SimError

log = logging.getLogger(__name__)
CONTROL_PREFIX = "/_sim"


def _sim(request: Request) -> CarrierSimulator:
    sim: CarrierSimulator = request.app.state.sim
    return sim


def _answer(result: bool, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"result": result, "returnCode": code, "message": message, **extra})


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.strip().upper().encode(), expected.encode())


def _object(text: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


async def _form(request: Request) -> dict[str, str]:
    params: dict[str, str] = dict(request.query_params)
    form = await request.form()
    params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


kuaidi100 = APIRouter(tags=["Kuaidi100"])


@kuaidi100.post("/label/order")
async def label_order(request: Request) -> Response:
    """Electronic waybill (电子面单): one number per orderId, the same again on a repeat."""
    sim = _sim(request)
    form = await _form(request)
    if form.get("method") != "order":
        return _answer(False, "400", "不支持的method")
    param, t = form.get("param", ""), form.get("t", "")
    if form.get("key") != sim.key:
        return _answer(False, "601", "key不存在或已过期")
    if not _same(form.get("sign", ""), label_sign(param, t, sim.key, sim.secret)):
        return _answer(False, "403", "验证签名失败")
    doc = _object(param)
    if doc is None:
        return _answer(False, "400", "param格式错误")
    rec, send = doc.get("recMan"), doc.get("sendMan")
    order_id = str(doc.get("orderId") or "")
    if (
        not isinstance(rec, dict)
        or not isinstance(send, dict)
        or not all(rec.get(k) for k in ("name", "mobile", "printAddr"))
        or not all(send.get(k) for k in ("name", "mobile", "printAddr"))
        or not order_id
    ):
        return _answer(False, "400", "参数错误：收寄件人信息或orderId不完整")
    try:
        waybill, _ = sim.issue(str(doc.get("kuaidicom", "")), order_id)
    except SimError as exc:
        return _answer(False, "400", exc.message)
    data = {
        "taskId": waybill.task_id,
        "kuaidinum": waybill.number,
        "kuaidicom": waybill.company,
        "orderId": order_id,
        "label": "",
    }
    return _answer(True, "200", "提交成功", data=data)


@kuaidi100.post("/poll")
async def poll_subscribe(request: Request) -> Response:
    """Subscribe a waybill: 200 submitted, 501 already subscribed, 600/700/701 refused."""
    sim = _sim(request)
    form = await _form(request)
    doc = _object(form.get("param", ""))
    if form.get("schema", "json") != "json" or doc is None:
        return _answer(False, "700", "订阅方的订阅数据存在错误（如不支持的快递公司、单号为空）")
    if doc.get("key") != sim.key:
        return _answer(False, "600", "您不是合法的订阅者（即授权Key出错）")
    parameters = doc.get("parameters")
    if not isinstance(parameters, dict):
        parameters = {}
    company, number = str(doc.get("company") or ""), str(doc.get("number") or "")
    callback = str(parameters.get("callbackurl") or "")
    if not company or not number or not callback.startswith(("http://", "https://")):
        return _answer(False, "700", "订阅方的订阅数据存在错误（如不支持的快递公司、单号为空）")
    try:
        fresh = sim.subscribe(
            company,
            number,
            callback,
            str(parameters.get("salt") or ""),
            resultv2=str(parameters.get("resultv2") or "0"),
            phone=str(parameters.get("phone") or ""),
        )
    except SimError:
        return _answer(False, "701", "拒绝订阅的快递公司")
    if not fresh:
        return _answer(False, "501", "重复订阅")
    return _answer(True, "200", "提交成功")


@kuaidi100.post("/poll/query.do")
async def poll_query(request: Request) -> Response:
    """Real-time query: the tracking played so far, newest first."""
    sim = _sim(request)
    form = await _form(request)
    param = form.get("param", "")
    if form.get("customer") != sim.customer or not _same(
        form.get("sign", ""), query_sign(param, sim.key, sim.customer)
    ):
        return _answer(False, "503", "验证签名失败")
    doc = _object(param)
    if doc is None or not doc.get("com") or not doc.get("num"):
        return _answer(False, "400", "提交的数据不完整，或者贵公司没授权")
    waybill = sim.find(str(doc["com"]), str(doc["num"]))
    if waybill is None or waybill.played == 0:
        return _answer(False, "500", "查询无结果，请隔段时间再查")
    resultv2 = str(doc.get("resultv2") or "0")
    last = sim.last_result(waybill)
    if resultv2 not in ("1", "4"):
        last["data"] = [
            {k: v for k, v in item.items() if k in ("context", "time", "ftime")}
            for item in last["data"]
        ]
    return JSONResponse(last)


# --- control -----------------------------------------------------------------------------------


class AdvanceRequest(BaseModel):
    number: str | None = Field(default=None, max_length=64)
    steps: int = Field(default=1, ge=1, le=100)
    to_end: bool = False


class ModeRequest(ModePatch):
    """A mode patch for everyone or one waybill, plus the outage and the script defaults."""

    number: str | None = Field(default=None, max_length=64)
    down_seconds: float | None = Field(default=None, ge=0, le=86_400)
    down_requests: int | None = Field(default=None, ge=0, le=1_000_000)
    final: Final | None = None
    transit_steps: int | None = Field(default=None, ge=0, le=20)


class ScriptRequest(BaseModel):
    number: str = Field(min_length=1, max_length=64)
    final: Final | None = None
    transit_steps: int | None = Field(default=None, ge=0, le=20)


class IssueRequest(BaseModel):
    company: str = Field(min_length=1, max_length=32)
    order_id: str = Field(min_length=1, max_length=64)


class SubscribeRequest(BaseModel):
    company: str = Field(min_length=1, max_length=32)
    number: str = Field(min_length=1, max_length=64)
    callback_url: str = Field(min_length=8, max_length=1024)
    salt: str = Field(default="", max_length=128)
    resultv2: str = "1"


control = APIRouter(prefix=CONTROL_PREFIX, tags=["control"])


@control.post("/advance")
async def control_advance(request: Request, body: AdvanceRequest) -> Response:
    """Play the next step(s) of one or every subscribed waybill and push; answers the attempts."""
    sim = _sim(request)
    if body.to_end:
        deliveries = await sim.run_to_end(body.number)
    else:
        deliveries = await sim.advance(body.number, body.steps)
    return JSONResponse([d.as_json() for d in deliveries])


@control.post("/flush")
async def control_flush(request: Request, number: str | None = None) -> Response:
    """Send what out-of-order mode holds back."""
    return JSONResponse([d.as_json() for d in await _sim(request).flush(number)])


@control.post("/retry")
async def control_retry(request: Request) -> Response:
    """Resend every push that was not answered result:true (Kuaidi100 retries 3 times)."""
    return JSONResponse([d.as_json() for d in await _sim(request).retry()])


@control.post("/mode")
async def control_mode(request: Request, body: ModeRequest) -> Response:
    """Change misbehaviour (globally or for `number`), the outage, or the script defaults."""
    sim = _sim(request)
    patch = ModePatch(**body.model_dump(include=set(ModePatch.model_fields), exclude_none=True))
    mode = sim.set_mode(patch, body.number)
    if body.number is not None and (body.final or body.transit_steps is not None):
        sim.set_script(body.number, final=body.final, transit_steps=body.transit_steps)
    if body.number is None:
        if body.final is not None:
            sim.default_final = body.final
        if body.transit_steps is not None:
            sim.default_transit_steps = body.transit_steps
    sim.set_down(body.down_seconds, body.down_requests)
    return JSONResponse(
        {
            "mode": mode.view(MODE_FIELDS),
            "down_requests": sim.down_requests,
            "default_final": sim.default_final,
            "default_transit_steps": sim.default_transit_steps,
        }
    )


@control.post("/script")
async def control_script(request: Request, body: ScriptRequest) -> Response:
    """Rewrite one waybill's script (final state, number of 在途 steps) before it plays."""
    waybill = _sim(request).set_script(
        body.number, final=body.final, transit_steps=body.transit_steps
    )
    return JSONResponse(waybill.as_json())


@control.post("/waybills")
async def control_issue(request: Request, body: IssueRequest) -> Response:
    """Issue a waybill directly (as if the label API had been called)."""
    waybill, _ = _sim(request).issue(body.company, body.order_id)
    return JSONResponse(waybill.as_json(), status_code=201)


@control.post("/subscriptions")
async def control_subscribe(request: Request, body: SubscribeRequest) -> Response:
    """Subscribe a waybill directly (as if /poll had been called)."""
    sim = _sim(request)
    sim.subscribe(body.company, body.number, body.callback_url, body.salt, resultv2=body.resultv2)
    waybill = sim.find(body.company, body.number)
    assert waybill is not None
    return JSONResponse(waybill.as_json(), status_code=201)


@control.get("/waybills")
async def control_waybills(
    request: Request, number: str | None = None, subscribed: bool | None = None
) -> list[dict[str, Any]]:
    """Every waybill with its script position and true final status."""
    return [
        w.as_json()
        for w in _sim(request).waybills.values()
        if (number is None or w.number == number)
        and (subscribed is None or (w.subscription is not None) == subscribed)
    ]


@control.get("/deliveries")
async def control_deliveries(
    request: Request,
    number: str | None = None,
    limit: int = Query(default=1000, ge=1, le=100_000),
) -> list[dict[str, Any]]:
    """Each push attempt, oldest first, with what the receiver answered."""
    rows = [d.as_json() for d in _sim(request).deliveries if number is None or d.number == number]
    return rows[-limit:]


@control.get("/status")
async def control_status(request: Request) -> dict[str, Any]:
    """Counts and the mode in force."""
    sim = _sim(request)
    return {
        "waybills": len(sim.waybills),
        "subscribed": sum(1 for w in sim.waybills.values() if w.subscription is not None),
        "deliveries": len(sim.deliveries),
        "pending_retries": len(sim.retries),
        "requests": sim.requests,
        "mode": sim.mode.view(MODE_FIELDS),
        "down_requests": sim.down_requests,
    }


@control.post("/reset")
async def control_reset(request: Request) -> dict[str, str]:
    """Forget every waybill and delivery; behaviour back to normal."""
    await _sim(request).reset()
    return {"status": "reset"}


async def _push_loop(sim: CarrierSimulator, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await sim.retry()
            await sim.advance()
        except Exception:  # the timer must survive one bad round
            log.exception("carrier simulator push round failed")


def create_carrier_sim_app(
    sim: CarrierSimulator | None = None,
    *,
    push_every: float | None = None,
    on_startup: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """The simulator as an ASGI app; `push_every` seconds > 0 plays a step for every subscribed
    waybill on a timer (the demo), else steps are played only through the control API."""
    engine = sim or CarrierSimulator()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_push_loop(engine, push_every)) if push_every else None
        if on_startup is not None:
            await on_startup()
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = simulator_app(
        engine,
        [kuaidi100, control],
        title="ordertally carrier simulator",
        description="Kuaidi100's waybill, subscription, query and push formats, played locally.",
        lifespan=lifespan,
    )
    app.add_middleware(_Outage, sim=engine)
    return app


class _Outage:
    """Answer 503 to the carrier APIs (never to /_sim) while the simulator is "down"."""

    def __init__(self, app: ASGIApp, sim: CarrierSimulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] == "http" and not path.startswith(CONTROL_PREFIX) and self.sim.take_down():
            response = PlainTextResponse("Service Unavailable", status_code=503)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
