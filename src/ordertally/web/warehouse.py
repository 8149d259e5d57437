"""The inventory and warehouse screens: stock by SKU × warehouse with reserved, available and
safety stock, the movements ledger, receipts, and shipping a batch of parcels from a shipped
list. Pages call the inventory and fulfillment services; each write checks the CSRF token."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import RedirectResponse, Response

from ordertally.catalog import service as catalog_service
from ordertally.core.errors import OrdertallyError
from ordertally.fulfillment import service as fulfillment_service
from ordertally.fulfillment import shiplist
from ordertally.inventory import service as inventory_service
from ordertally.orders import service as orders_service
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind
from ordertally.web.i18n import N_
from ordertally.web.pages import _common, _error_text
from ordertally.web.security import (
    PageForbidden,
    SignedIn,
    check_csrf,
    check_warehouse,
    database,
    may,
    signed_in,
)
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 100
MOVEMENT_KINDS: dict[str, str] = {
    "receipt": N_("Receipt"),
    "adjustment": N_("Adjustment"),
    "count": N_("Stock count"),
    "shipment": N_("Shipment"),
    "return": N_("Return"),
}
SHIP_RESULTS: dict[str, str] = {
    "shipped": N_("Shipped"),
    "unchanged": N_("Already shipped"),
    "error": N_("Refused"),
}
MAX_LIST_BYTES = 5 * 1024 * 1024
# Orders listed per waiting status (the orders list, filtered by status, shows the rest).
WAITING_SHOWN = 50
_AFTER = re.compile(r"^([^|]{1,64})\|([^|]{1,32})$")


async def _inventory_context(request: Request, user: SignedIn, **extra: Any) -> dict[str, Any]:
    q = request.query_params
    prefix = (q.get("sku") or "").strip()[:64] or None
    kind = q.get("kind") if q.get("kind") in MOVEMENT_KINDS else None
    match = _AFTER.match(q.get("after", ""))
    after = (match.group(1), match.group(2)) if match else None
    async with database(request).transaction(write=False) as session:
        stock = await inventory_service.stock_table(
            session, sku_prefix=prefix, after=after, limit=PAGE_SIZE + 1
        )
        ledger = await inventory_service.movements(session, kind=kind, limit=50)
        receipts = await inventory_service.movements(session, kind="receipt", limit=10)
        warehouses = await inventory_service.list_warehouses(session)
        products = await catalog_service.line_facts(
            session, {r["sku"] for r in stock} | {m.sku for m, _ in [*ledger, *receipts]}
        )
    more = len(stock) > PAGE_SIZE
    stock = stock[:PAGE_SIZE]
    return _common(
        request,
        user,
        active="inventory",
        path="/ui/inventory",
        stock=stock,
        next_after=f"{stock[-1]['sku']}|{stock[-1]['warehouse']}" if more else None,
        sku=prefix or "",
        kind=kind or "",
        ledger=ledger,
        receipts=receipts,
        warehouses=warehouses,
        # code -> (name, English name) from the product master: the screen shows names
        products={code: (f.name, f.name_en) for code, f in products.items()},
        kinds=MOVEMENT_KINDS,
        can_receive=may(user, "inventory.move"),
        can_ship=may(user, "fulfillment.ship"),
        **({"error": None, "form": {}} | extra),
    )


@router.get("/ui/inventory")
async def inventory_page(request: Request) -> Response:
    """Stock by SKU × warehouse, the ledger and the latest receipts."""
    user = await signed_in(request, "inventory.read")
    return render(request, "inventory.html", await _inventory_context(request, user))


RESERVATION_STATES: dict[str, str] = {
    "held": N_("Held for unpaid orders"),
    "committed": N_("Committed to paid orders"),
}
RESERVATIONS_SHOWN = 100
# The dry run's form: one line per SKU ("SKU quantity"), at most this many lines.
DRY_RUN_LINES = 50
_DEMAND_SEPARATORS = re.compile(r"[\s×*,，]+")


@router.get("/ui/inventory/reservations")
async def reservations_page(request: Request) -> Response:
    """Units held for unpaid orders (soonest to expire first) or committed to paid ones."""
    user = await signed_in(request, "inventory.read")
    q = request.query_params
    state = str(q.get("state")) if q.get("state") in RESERVATION_STATES else "held"
    sku = (q.get("sku") or "").strip()[:64] or None
    async with database(request).transaction(write=False) as session:
        rows = await inventory_service.open_reservations(
            session, state, sku=sku, warehouses=user.warehouses, limit=RESERVATIONS_SHOWN
        )
        orders = await orders_service.get_orders_by_id(session, [r["order_id"] for r in rows])
    order_nos = {o.id: o.order_no for o in orders if user.may_act_for_channel(o.channel)}
    # A channel-scoped user sees only their accounts' orders' units.
    rows = [r for r in rows if user.channels is None or r["order_id"] in order_nos]
    context = _common(
        request,
        user,
        active="inventory",
        path="/ui/inventory/reservations",
        reservations=[r | {"order_no": order_nos.get(r["order_id"])} for r in rows],
        state=state,
        states=RESERVATION_STATES,
        sku=sku or "",
        shown=RESERVATIONS_SHOWN,
    )
    return render(request, "reservations.html", context)


def _demand(text: str) -> tuple[dict[str, int], list[str]]:
    """The dry run's lines ("SKU quantity", quantity 1 when left out), and the lines refused."""
    demand: dict[str, int] = {}
    refused: list[str] = []
    for line in text.splitlines()[:DRY_RUN_LINES]:
        if not line.strip():
            continue
        parts = [p for p in _DEMAND_SEPARATORS.split(line.strip()) if p not in ("x", "X")]
        quantity = int(parts[1]) if len(parts) == 2 and parts[1].isdecimal() else 0
        if len(parts) == 1:
            quantity = 1
        if not 1 <= quantity <= 999_999 or len(parts[0]) > 64:
            refused.append(line.strip()[:80])
            continue
        demand[parts[0]] = demand.get(parts[0], 0) + quantity
    return demand, refused


@router.get("/ui/inventory/allocation")
async def allocation_page(request: Request) -> Response:
    """The allocation dry run: where an order of these lines to this province would ship from,
    and why; nothing is reserved (a read, so a GET form)."""
    user = await signed_in(request, "inventory.read")
    q = request.query_params
    province = (q.get("province") or "").strip()[:32]
    lines = (q.get("lines") or "")[:4000]
    plan = None
    error = None
    if "lines" in q:
        demand, refused = _demand(lines)
        if refused:
            error = N_("Write one line per SKU: the SKU, then the quantity.")
        elif not demand:
            error = N_("Give at least one SKU.")
        elif not province:
            error = N_("Give the province the order ships to.")
        else:
            try:
                async with database(request).transaction(write=False) as session:
                    plan = await inventory_service.simulate(session, province, demand)
            except OrdertallyError as exc:
                error = _error_text(exc)
    context = _common(
        request,
        user,
        active="inventory",
        path="/ui/inventory/allocation",
        query=str(request.url.query),
        province=province,
        lines=lines,
        plan=plan.explanation if plan is not None else None,
        feasible=plan.ok if plan is not None else None,
        error=error,
    )
    return render(request, "allocation.html", context, status=422 if error else 200)


@router.post("/ui/inventory/receipts")
async def receive(request: Request) -> Response:
    """Book goods received into a warehouse (a receipt in the ledger)."""
    user = await signed_in(request, "inventory.move")
    await check_csrf(request, user)
    form = await request.form()
    values = {k: str(form.get(k, "")).strip()[:200] for k in ("warehouse", "sku", "quantity")}
    reason = str(form.get("reason", "")).strip()[:500] or "receipt"
    check_warehouse(user, values["warehouse"], "inventory.move")
    try:
        quantity = int(values["quantity"])
    except ValueError:
        quantity = 0
    try:
        async with database(request).transaction() as session:
            await inventory_service.record_movement(
                session,
                warehouse_code=values["warehouse"],
                sku=values["sku"],
                kind="receipt",
                quantity=quantity,
                reason=reason,
                actor=f"user:{user.username}",
            )
    except OrdertallyError as exc:
        context = await _inventory_context(request, user, error=_error_text(exc), form=values)
        return render(request, "inventory.html", context, status=exc.status)
    return RedirectResponse("/ui/inventory?done=received", status_code=303)


async def _shipping_context(request: Request, user: SignedIn, **extra: Any) -> dict[str, Any]:
    async with database(request).transaction(write=False) as session:
        waiting = [
            order
            for status in ("allocated", "fulfilling")
            for order in await orders_service.list_orders(
                session,
                status=status,
                channel=None,
                created_from=None,
                created_to=None,
                after=None,
                limit=WAITING_SHOWN,
                channels=user.channels,
            )
        ]
    return _common(
        request,
        user,
        active="inventory",
        # A page rendered after a POST switches language back to the screen itself.
        path="/ui/shipping",
        query="",
        waiting=waiting,
        result_labels=SHIP_RESULTS,
        **({"error": None, "results": None, "summary": None, "text": ""} | extra),
    )


@router.get("/ui/shipping")
async def shipping_page(request: Request) -> Response:
    """Orders waiting to leave, and the form to ship a batch from a shipped list."""
    user = await signed_in(request, "fulfillment.ship")
    return render(request, "shipping.html", await _shipping_context(request, user))


@router.post("/ui/shipping")
async def ship_batch(request: Request) -> Response:
    """Ship every row of a shipped list (pasted or a CSV/XLSX file); one result per row."""
    user = await signed_in(request, "fulfillment.ship")
    await check_csrf(request, user)
    if user.warehouses is not None or user.channels is not None:
        # As for a scoped key: a list names parcels of any warehouse and channel.
        raise PageForbidden(user, "fulfillment.ship", scope=True)
    form = await request.form(max_part_size=MAX_LIST_BYTES)
    upload = form.get("file")
    text = str(form.get("list", ""))[:MAX_LIST_BYTES]
    data = await upload.read(MAX_LIST_BYTES) if isinstance(upload, UploadFile) else b""
    data = data or text.strip().encode()
    if not data:
        context = await _shipping_context(request, user, error=N_("Paste or choose a list."))
        return render(request, "shipping.html", context, status=422)
    actor = Actor(ActorKind.WAREHOUSE, f"user:{user.username}")
    try:
        rows, refused = shiplist.parse(data)
        results = await database(request).run(
            lambda session: fulfillment_service.ship_rows(session, rows, actor)
        )
    except OrdertallyError as exc:
        context = await _shipping_context(request, user, error=_error_text(exc), text=text)
        return render(request, "shipping.html", context, status=exc.status)
    results += [
        {"line": e.line, "result": "error", "code": f"row.{e.code}", "message": e.message}
        for e in refused
    ]
    results.sort(key=lambda r: int(r["line"]))
    summary: dict[str, int] = {}
    for r in results:
        summary[r["result"]] = summary.get(r["result"], 0) + 1
    context = await _shipping_context(request, user, results=results, summary=summary)
    return render(request, "shipping.html", context)
