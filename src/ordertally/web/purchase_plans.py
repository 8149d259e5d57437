"""The purchase plans screen (采购计划): expected receipts by SKU, warehouse and date, filtered
and paged; each stock row's cover (free stock against safety stock, the units planned in the
next 7 days, and whether the stock alert's condition holds, so a red alert's reason is on the
page); add one plan, import a CSV (a preview of the rows accepted and refused, then confirm),
delete with a confirmation, export the filtered list. Admin, ops and the warehouse edit (a
warehouse-scoped user within their warehouses); finance and cs read. Every write is the rules
service's, which records it in the plans' audit trail."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.datastructures import FormData, UploadFile
from starlette.responses import RedirectResponse, Response

from ordertally.catalog import service as catalog_service
from ordertally.core.errors import OrdertallyError
from ordertally.core.spreadsheet import safe_row
from ordertally.inventory import service as inventory_service
from ordertally.rules import service as rules_service
from ordertally.rules.errors import PlanNotFound
from ordertally.rules.service import PLAN_COLUMNS, PlanCheck
from ordertally.web import pages
from ordertally.web.case_desk import actor_name, say
from ordertally.web.i18n import N_
from ordertally.web.security import (
    SignedIn,
    check_csrf,
    check_warehouse,
    database,
    may,
    signed_in,
)
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)

PATH = "/ui/inventory/purchase-plans"
EDIT = "inventory.move"  # admin, ops and the warehouse: who books receipts plans them
PAGE_SIZE = 50
COVER_SIZE = 30
EVENTS_SHOWN = 20
EXPORT_LIMIT = 5_000
# What a preview lists of the accepted rows (all of them are confirmed; the count says so).
PREVIEW_SHOWN = 200
MAX_FILE_BYTES = 1_000_000
_AFTER = re.compile(r"^(\d{4}-\d\d-\d\d)_(\d{1,18})$")
_COVER_AFTER = re.compile(r"^([^|]{1,64})\|([^|]{1,32})$")

REASONS: dict[str, str] = {
    "sku_required": N_("The SKU is missing."),
    "warehouse_required": N_("The warehouse is missing."),
    "date_invalid": N_("The expected date is not a date (YYYY-MM-DD)."),
    "quantity_invalid": N_("The quantity must be a whole number from 1 to 10,000,000."),
    "too_long": N_("A value is too long (SKU and reference: 64 characters, warehouse: 32)."),
    "sku_unknown": N_("The product catalogue has no such SKU."),
    "warehouse_unknown": N_("There is no such warehouse."),
    "warehouse_out_of_scope": N_("This warehouse is outside the ones you are limited to."),
    "duplicate": N_("The same plan appears twice in the file."),
}
# The add form's field each refusal is shown beside.
REASON_FIELDS: dict[str, str] = {
    "sku_required": "sku",
    "sku_unknown": "sku",
    "warehouse_required": "warehouse",
    "warehouse_unknown": "warehouse",
    "warehouse_out_of_scope": "warehouse",
    "date_invalid": "expected_date",
    "quantity_invalid": "quantity",
}
COVER_STATES: dict[str, str] = {
    "red": N_("Red alert: below safety stock, nothing planned in 7 days"),
    "covered": N_("Covered: a receipt is planned within 7 days"),
    "short": N_("Below safety stock, nothing planned, not alerted by the edited rule"),
    "ok": N_("At or above safety stock"),
    "unset": N_("No safety stock set"),
}
RULE_STATES: dict[str, str] = {
    "on": N_("The stock alert rule is on: it runs daily over these rows."),
    "off": N_("The stock alert rule is installed but switched off."),
    "absent": N_("The stock alert rule is not installed: the states show what it would say."),
}
EVENT_ACTIONS: dict[str, str] = {
    "added": N_("Added"),
    "imported": N_("Imported"),
    "deleted": N_("Deleted"),
}
FLASHES: dict[str, str] = {
    "added": N_("The purchase plan was saved."),
    "unchanged": N_("This plan was saved already: nothing changed."),
    "deleted": N_("The purchase plan was deleted."),
}
IMPORT_ERRORS: dict[str, str] = {
    "empty": N_("Choose a CSV file or paste its rows."),
    "too_big": N_("The file is larger than 1 MB."),
    "encoding": N_("The file is neither UTF-8 nor GB18030 text."),
    "header": N_("The first line must name the columns sku, warehouse, expected_date, quantity."),
    "rows": N_("At most 5,000 rows per file."),
    "changed": N_("Something changed since the preview: check the rows again, nothing was saved."),
}


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _filters(request: Request) -> dict[str, Any]:
    """The list's filters from the query string (bad values are dropped and reported)."""
    q = request.query_params
    raw_from, raw_to = (q.get("date_from") or "").strip(), (q.get("date_to") or "").strip()
    start, end = _date(raw_from), _date(raw_to)
    return {
        "sku": (q.get("sku") or "").strip()[:64],
        "warehouse": (q.get("warehouse") or "").strip()[:32],
        "date_from": start.isoformat() if start else "",
        "date_to": end.isoformat() if end else "",
        "start": start,
        "end": end,
        "bad_dates": bool((raw_from and start is None) or (raw_to and end is None)),
        "cover": "all" if q.get("cover") == "all" else "short",
    }


def _scope(user: SignedIn, warehouse: str) -> list[str] | None:
    """The warehouses a list may show: the one filtered on, within the user's scope."""
    if warehouse:
        return [warehouse] if user.may_act_for(warehouse) else []
    return list(user.warehouses) if user.warehouses is not None else None


def _query(filters: dict[str, Any], **extra: str) -> str:
    keys = ("sku", "warehouse", "date_from", "date_to", "cover")
    return urlencode({k: v for k, v in {**{k: filters[k] for k in keys}, **extra}.items() if v})


async def _context(request: Request, user: SignedIn, **extra: Any) -> dict[str, Any]:
    filters = _filters(request)
    q = request.query_params
    match = _AFTER.match(q.get("after", ""))
    after = (date.fromisoformat(match.group(1)), int(match.group(2))) if match else None
    cover_match = _COVER_AFTER.match(q.get("cover_after", ""))
    cover_after = (cover_match.group(1), cover_match.group(2)) if cover_match else None
    scope = _scope(user, filters["warehouse"])
    delete_id = q.get("delete", "")
    async with database(request).transaction(write=False) as session:
        plans = await rules_service.plan_page(
            session,
            sku_prefix=filters["sku"] or None,
            warehouses=scope,
            start=filters["start"],
            end=filters["end"],
            after=after,
            limit=PAGE_SIZE + 1,
        )
        cover = await rules_service.stock_cover(
            session,
            sku_prefix=filters["sku"] or None,
            warehouse=filters["warehouse"] or None,
            warehouses=user.warehouses,
            short_only=filters["cover"] == "short",
            after=cover_after,
            limit=COVER_SIZE,
        )
        events = await rules_service.plan_events(
            session, warehouses=user.warehouses, limit=EVENTS_SHOWN
        )
        warehouses = [
            w for w in await inventory_service.list_warehouses(session) if user.may_act_for(w.code)
        ]
        to_delete = None
        if delete_id.isdecimal() and len(delete_id) < 19 and may(user, EDIT):
            try:
                found = await rules_service.get_plan(session, int(delete_id))
                to_delete = found if user.may_act_for(found.warehouse_code) else None
            except PlanNotFound:
                to_delete = None
        products = await catalog_service.line_facts(
            session, {p.sku for p in plans} | {r["sku"] for r in cover.rows}
        )
    more = len(plans) > PAGE_SIZE
    plans = plans[:PAGE_SIZE]
    last = plans[-1] if more else None
    return pages._common(
        request,
        user,
        active="inventory",
        path=PATH,
        plans=plans,
        next_page=_query(filters, after=f"{last.expected_date.isoformat()}_{last.id}")
        if last
        else None,
        first_page=_query(filters) if after else None,
        filters=filters,
        cover=cover,
        next_cover=_query(filters, cover_after=f"{cover.next_after[0]}|{cover.next_after[1]}")
        if cover.next_after
        else None,
        cover_states=COVER_STATES,
        rule_states=RULE_STATES,
        events=events,
        event_actions=EVENT_ACTIONS,
        warehouses=warehouses,
        products={code: (f.name, f.name_en) for code, f in products.items()},
        to_delete=to_delete,
        export_query=_query(filters),
        can_edit=may(user, EDIT),
        can_see_rules=may(user, "rules.read"),
        flash=FLASHES.get(q.get("done", "")),
        imported=_imported(request),
        **({"errors": {}, "form": {}, "import_error": None} | extra),
    )


def _imported(request: Request) -> dict[str, int] | None:
    q = request.query_params
    if q.get("done") != "imported":
        return None
    added, skipped = q.get("added", ""), q.get("skipped", "")
    if not (added.isdecimal() and skipped.isdecimal()):
        return None
    return {"added": int(added[:7]), "skipped": int(skipped[:7])}


@router.get(PATH)
async def plans_page(request: Request) -> Response:
    """The purchase plans (filtered, in keyset pages), the stock cover and the audit trail."""
    user = await signed_in(request, "inventory.read")
    context = await _context(request, user)
    status = 422 if context["filters"]["bad_dates"] else 200
    return render(request, "purchase_plans.html", context, status=status)


@router.get(f"{PATH}/export.csv")
async def export_plans(request: Request) -> Response:
    """The filtered list as CSV (the import's columns first, so an export imports back; UTF-8
    with BOM for Excel; every text cell neutralised against formulas)."""
    user = await signed_in(request, "inventory.read")
    filters = _filters(request)
    async with database(request).transaction(write=False) as session:
        plans = await rules_service.plan_page(
            session,
            sku_prefix=filters["sku"] or None,
            warehouses=_scope(user, filters["warehouse"]),
            start=filters["start"],
            end=filters["end"],
            limit=EXPORT_LIMIT,
        )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*PLAN_COLUMNS, "created_by", "created_at"])
    for p in plans:
        writer.writerow(
            safe_row(
                [
                    p.sku,
                    p.warehouse_code,
                    p.expected_date.isoformat(),
                    p.quantity,
                    p.reference,
                    p.created_by,
                    p.created_at.isoformat(),
                ]
            )
        )
    return Response(
        "\ufeff" + out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": 'attachment; filename="purchase-plans.csv"',
            "cache-control": "no-store",
        },
    )


def _field_errors(request: Request, reasons: list[str]) -> dict[str, str]:
    """A refused row's reasons as messages by form field."""
    out: dict[str, str] = {}
    for reason in reasons:
        field = REASON_FIELDS.get(reason, "form")
        out.setdefault(field, say(request, REASONS.get(reason, reason)))
    return out


@router.post(PATH)
async def add_plan(request: Request) -> Response:
    """Save one purchase plan; a refused field is shown beside it and nothing is saved."""
    user = await signed_in(request, "inventory.move")
    form = await request.form()
    await check_csrf(request, user, form)
    cells = {k: str(form.get(k, "")).strip()[:200] for k in PLAN_COLUMNS}
    try:
        async with database(request).transaction() as session:
            check = await rules_service.check_plans(
                session, [(1, cells)], warehouses=user.warehouses
            )
            added = 0
            if check.accepted:
                added = await rules_service.add_plans(session, check.accepted, actor_name(user))
    except OrdertallyError as exc:
        errors = {"form": say(request, pages._error_text(exc))}
        context = await _context(request, user, errors=errors, form=cells)
        return render(request, "purchase_plans.html", context, status=exc.status)
    if check.rejected:
        errors = _field_errors(request, check.rejected[0].reasons)
        context = await _context(request, user, errors=errors, form=cells)
        return render(request, "purchase_plans.html", context, status=422)
    return RedirectResponse(f"{PATH}?done={'added' if added else 'unchanged'}", 303)


async def _file_text(form: FormData) -> tuple[str | None, str | None]:
    """The uploaded file's text (else the pasted rows), or the reason it cannot be read."""
    upload = form.get("file")
    data = await upload.read(MAX_FILE_BYTES + 1) if isinstance(upload, UploadFile) else b""
    if not data:
        data = str(form.get("text", "")).encode()
    if not data.strip():
        return None, "empty"
    if len(data) > MAX_FILE_BYTES:
        return None, "too_big"
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding), None
        except UnicodeDecodeError:
            continue
    return None, "encoding"


def _import_error(exc: OrdertallyError) -> str:
    return "rows" if "rows per file" in exc.detail else "header"


def _canonical(check: PlanCheck) -> str:
    """The accepted rows as the CSV the confirm step posts back (checked again there)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PLAN_COLUMNS)
    for row in check.accepted:
        writer.writerow(
            [
                row["sku"],
                row["warehouse"],
                row["expected_date"].isoformat(),
                row["quantity"],
                row["reference"],
            ]
        )
    return out.getvalue()


def _preview(
    request: Request, user: SignedIn, check: PlanCheck, *, error: str | None, status: int
) -> Response:
    context = pages._common(
        request,
        user,
        active="inventory",
        path=PATH,
        query="",
        accepted=check.accepted[:PREVIEW_SHOWN],
        accepted_count=len(check.accepted),
        new_count=sum(1 for r in check.accepted if r["new"]),
        rejected=check.rejected,
        reasons=REASONS,
        columns=PLAN_COLUMNS,
        confirm_rows=_canonical(check),
        error=error,
    )
    return render(request, "purchase_plans_import.html", context, status=status)


@router.post(f"{PATH}/import")
async def preview_import(request: Request) -> Response:
    """Check a CSV of plans row by row and show what a confirm would save and what is refused
    (with the reasons); nothing is saved."""
    user = await signed_in(request, "inventory.move")
    form = await request.form(max_files=1, max_fields=8)
    await check_csrf(request, user, form)
    text, problem = await _file_text(form)
    check = PlanCheck()
    if text is not None:
        try:
            async with database(request).transaction(write=False) as session:
                check = await rules_service.preview_plan_csv(
                    session, text, warehouses=user.warehouses
                )
        except OrdertallyError as exc:
            problem = _import_error(exc)
    if problem is not None:
        context = await _context(request, user, import_error=say(request, IMPORT_ERRORS[problem]))
        return render(request, "purchase_plans.html", context, status=422)
    return _preview(request, user, check, error=None, status=200)


@router.post(f"{PATH}/import/confirm")
async def confirm_import(request: Request) -> Response:
    """Save the rows the preview accepted, checked again: if any is refused now, nothing is
    saved and the preview is shown again."""
    user = await signed_in(request, "inventory.move")
    form = await request.form()
    await check_csrf(request, user, form)
    text = str(form.get("rows", ""))[: MAX_FILE_BYTES * 2]
    try:
        async with database(request).transaction() as session:
            check = await rules_service.preview_plan_csv(session, text, warehouses=user.warehouses)
            added = 0
            if not check.rejected and check.accepted:
                added = await rules_service.add_plans(
                    session, check.accepted, actor_name(user), action="imported"
                )
    except OrdertallyError as exc:
        context = await _context(
            request, user, import_error=say(request, IMPORT_ERRORS[_import_error(exc)])
        )
        return render(request, "purchase_plans.html", context, status=422)
    if check.rejected or not check.accepted:
        message = say(request, IMPORT_ERRORS["changed" if check.rejected else "empty"])
        return _preview(request, user, check, error=message, status=409)
    query = urlencode({"done": "imported", "added": added, "skipped": len(check.accepted) - added})
    return RedirectResponse(f"{PATH}?{query}", status_code=303)


@router.post(PATH + "/{plan_id}/delete")
async def delete_plan(request: Request, plan_id: int) -> Response:
    """Delete a purchase plan (after the page's confirmation step); recorded in the trail."""
    user = await signed_in(request, "inventory.move")
    await check_csrf(request, user)
    try:
        async with database(request).transaction() as session:
            plan = await rules_service.get_plan(session, plan_id)
            check_warehouse(user, plan.warehouse_code, EDIT)
            await rules_service.delete_plan(session, plan_id, by=actor_name(user))
    except PlanNotFound:
        errors = {"form": say(request, N_("This purchase plan no longer exists."))}
        context = await _context(request, user, errors=errors)
        return render(request, "purchase_plans.html", context, status=404)
    return RedirectResponse(f"{PATH}?done=deleted", status_code=303)
