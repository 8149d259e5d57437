"""The exports screen (导出): choose a template (built-in or saved), its filters, the time zone
and the format; start the export as a background job; follow its progress (htmx polling);
download the file and its manifest once done; the history of exports with who asked, when and
the manifest's digest. Personal data in clear only for the roles the exports domain allows,
with a reason, logged as the API logs it (the export's audit row)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from ordertally.core.errors import OrdertallyError
from ordertally.core.http import client_ip, json_response
from ordertally.core.settings import get_settings
from ordertally.exports import service as exports_service
from ordertally.exports.errors import ExportNotReady, PiiNotAllowed
from ordertally.exports.models import ExportAudit
from ordertally.exports.schemas import ExportIn
from ordertally.web import i18n, pages
from ordertally.web.i18n import N_
from ordertally.web.security import SignedIn, check_csrf, database, may, signed_in
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)

MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
STATE_LABELS: dict[str, str] = {
    "queued": N_("Queued"),
    "running": N_("Running"),
    "done": N_("Done"),
    "failed": N_("Failed"),
    "expired": N_("Expired"),
}
# Time zones offered beside the merchant's own (any IANA name may be typed).
ZONES = (
    "Asia/Shanghai",
    "Asia/Hong_Kong",
    "Asia/Tokyo",
    "Europe/London",
    "America/New_York",
    "UTC",
)
HISTORY = 30


def actor_name(user: SignedIn) -> str:
    """The name a signed-in person exports under (as in the export audit)."""
    return f"user:{user.username}"


def _templates(saved: list[Any], locale: str) -> list[dict[str, Any]]:
    """Every template the form offers: built-in ones with their titles, then saved ones."""
    built_in = [
        {"name": t.name, "title": t.title_zh if locale == "zh_CN" else t.title_en, "saved": False}
        for t in exports_service.templates().values()
    ]
    return built_in + [{"name": s.name, "title": s.name, "saved": True} for s in saved]


async def _context(request: Request, user: SignedIn, **extra: Any) -> dict[str, Any]:
    chosen = str(extra.pop("template", "") or request.query_params.get("template", "orders"))
    async with database(request).transaction(write=False) as session:
        saved = await exports_service.saved_templates(session)
        history = await exports_service.list_exports(session, HISTORY)
        try:
            template, _ = await exports_service.template_of(session, chosen[:64])
        except OrdertallyError:
            chosen = "orders"
            template, _ = await exports_service.template_of(session, chosen)
    locale = i18n.pick_locale(request.cookies.get("ot_lang"))
    return pages._common(
        request,
        user,
        active="exports",
        path="/ui/exports",
        query="",
        templates=_templates(saved, locale),
        chosen=chosen,
        filter_keys=sorted(template.filters),
        history=history,
        zones=ZONES,
        merchant_zone=get_settings().timezone,
        may_unmask=user.role in exports_service.PII_ROLES,
        state_labels=STATE_LABELS,
        can_export=may(user, "exports.create"),
        **({"error": None, "form": {}} | extra),
    )


@router.get("/ui/exports")
async def exports_page(request: Request) -> Response:
    """The export form and the history of exports."""
    user = await signed_in(request, "exports.read")
    context = await _context(request, user)
    if request.headers.get("hx-target") == "export-filters":
        return render(request, "exports.html", context, block="filters")
    return render(request, "exports.html", context)


def _body(form: Any, filter_keys: list[str]) -> dict[str, Any]:
    """The API's export body from the form (empty fields left out)."""

    def day(name: str) -> str | None:
        value = str(form.get(name, "")).strip()[:10]
        return value or None

    filters = {}
    for key in filter_keys:
        value = str(form.get(f"f_{key}", "")).strip()[:64]
        if value:
            filters[key] = value
    return {
        "template": str(form.get("template", ""))[:64],
        "format": str(form.get("format", "csv")),
        "date_from": day("date_from"),
        "date_to": day("date_to"),
        "filters": filters,
        "timezone": str(form.get("timezone", "")).strip()[:64] or None,
        "unmask_pii": form.get("unmask_pii") == "1",
        "pii_reason": str(form.get("pii_reason", "")).strip()[:200] or None,
    }


@router.post("/ui/exports")
async def start_export(request: Request) -> Response:
    """Queue an export (the exports domain's checks; a refusal writes nothing) and follow it."""
    user = await signed_in(request, "exports.create")
    await check_csrf(request, user)
    form = await request.form()
    chosen = str(form.get("template", ""))[:64]
    requester = exports_service.Requester(actor_name(user), user.role, client_ip(request))
    try:
        async with database(request).transaction() as session:
            template, _ = await exports_service.template_of(session, chosen)
            body = ExportIn.model_validate(_body(form, sorted(template.filters)))
            export = await exports_service.request_export(session, body, requester)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        context = await _context(request, user, template=chosen, error=f"{where}: {first['msg']}")
        return render(request, "exports.html", context, status=422)
    except OrdertallyError as exc:
        reason = (
            N_("Your role may not export personal data in clear.")
            if isinstance(exc, PiiNotAllowed)
            else pages._error_text(exc)
        )
        context = await _context(request, user, template=chosen, error=reason)
        return render(request, "exports.html", context, status=exc.status)
    return RedirectResponse(f"/ui/exports/{export.export_no}", status_code=303)


def _progress(export: ExportAudit) -> float:
    if export.state == "done":
        return 1.0
    return export.rows_done / export.rows_total if export.rows_total else 0.0


async def _export_context(request: Request, user: SignedIn, export_no: str) -> dict[str, Any]:
    async with database(request).transaction(write=False) as session:
        export = await exports_service.get_export(session, export_no[:40])
    return pages._common(
        request,
        user,
        active="exports",
        export=export,
        progress=_progress(export),
        downloadable=exports_service.file_path(export) is not None
        and (not export.pii_unmasked or user.role in exports_service.PII_ROLES),
        state_labels=STATE_LABELS,
    )


@router.get("/ui/exports/{export_no}")
async def export_page(request: Request, export_no: str) -> Response:
    """One export: its request, progress (polled while it runs), manifest and downloads."""
    user = await signed_in(request, "exports.read")
    try:
        context = await _export_context(request, user, export_no)
    except OrdertallyError as exc:
        if exc.status != 404:
            raise
        missing = pages._common(
            request, user, reason="missing", permission=None, order_no=export_no
        )
        return render(request, "forbidden.html", missing, status=404)
    block = "progress" if request.headers.get("hx-target") == "export-progress" else None
    return render(request, "export.html", context, block=block)


@router.get("/ui/exports/{export_no}/file")
async def download(request: Request, export_no: str) -> Response:
    """The finished file (a file with personal data in clear only for the roles allowed)."""
    user = await signed_in(request, "exports.read")
    async with database(request).transaction(write=False) as session:
        export = await exports_service.get_export(session, export_no[:40])
    if export.pii_unmasked and user.role not in exports_service.PII_ROLES:
        raise PiiNotAllowed(f"export {export_no} holds personal data in clear")
    path = exports_service.file_path(export)
    if path is None:
        raise ExportNotReady(f"export {export_no} is {export.state}")
    return FileResponse(path, media_type=MEDIA[export.format], filename=path.name)


@router.get("/ui/exports/{export_no}/manifest")
async def manifest(request: Request, export_no: str) -> Response:
    """The manifest of a finished export as a JSON file."""
    await signed_in(request, "exports.read")
    async with database(request).transaction(write=False) as session:
        export = await exports_service.get_export(session, export_no[:40])
    if export.manifest is None:
        raise ExportNotReady(f"export {export_no} is {export.state}")
    return json_response(
        export.manifest,
        headers={"Content-Disposition": f'attachment; filename="{export.export_no}.manifest.json"'},
    )
